"""The lease's arithmetic and the lock settings, without a server."""

from __future__ import annotations

import pytest

from api.db.exceptions import ConfigurationError
from api.db.migrate.lease import (
    heartbeat_interval,
    is_expired,
    jittered,
    next_delay,
    renewal_overdue,
)
from api.db.migrate.lock import lock_settings


def test_heartbeat_renews_three_times_per_ttl() -> None:
    assert heartbeat_interval(30) == 10
    assert heartbeat_interval(2) == pytest.approx(2 / 3)


def test_expiry_is_strict() -> None:
    assert not is_expired(100.0, 100.0)
    assert is_expired(100.0, 100.001)
    assert not renewal_overdue(10.0, 12.0, 2.0) and renewal_overdue(10.0, 12.01, 2.0)


def test_poll_backoff_doubles_to_the_cap_and_jitter_stays_in_band() -> None:
    delays = [0.02]
    for _ in range(8):
        delays.append(next_delay(delays[-1], 0.5))
    assert delays[:3] == [0.02, 0.04, 0.08] and delays[-1] == 0.5
    assert all(0.05 <= jittered(0.1) < 0.15 for _ in range(200))


def test_settings_keyword_wins_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("API_DB_MIGRATION_LOCK", raising=False)
    monkeypatch.delenv("API_DB_LEASE_TTL", raising=False)
    assert lock_settings() == ("auto", 30.0)
    monkeypatch.setenv("API_DB_MIGRATION_LOCK", " Lease ")
    monkeypatch.setenv("API_DB_LEASE_TTL", "2.5")
    assert lock_settings() == ("lease", 2.5)
    assert lock_settings("advisory", 4) == ("advisory", 4.0)


@pytest.mark.parametrize(
    "lock, ttl", [("never", None), (None, 0.1), (None, float("inf")), (None, True), (None, "x")]
)
def test_bad_settings_are_configuration_errors(lock: str | None, ttl: object) -> None:
    with pytest.raises(ConfigurationError):
        lock_settings(lock, ttl)  # type: ignore[arg-type]
