"""Lock settings are validated in one place; backoff stays within its bounds."""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from api.db import ConfigurationError
from api.db.schema.ddl import (
    LockSafeOperation,
    LockSafeSqliteMigrator,
    LockSettings,
    safe_schema_migrator,
)


@pytest.mark.parametrize(
    "changes",
    [
        {"lock_timeout": 0},
        {"lock_timeout": -1.0},
        {"lock_timeout": float("inf")},
        {"lock_timeout": "5"},
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"backoff": -0.1},
        {"max_backoff": float("nan")},
    ],
)
def test_bad_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LockSettings(**changes)


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    settings = LockSettings(backoff=0.5, max_backoff=3.0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0)):
        for _ in range(20):
            assert ceiling / 2 <= settings.pause(attempt) <= ceiling


def test_factory_picks_the_engine_and_wraps_every_operation() -> None:
    migrator = safe_schema_migrator(peewee.SqliteDatabase(":memory:"), lock_timeout=2, retries=1)
    assert isinstance(migrator, LockSafeSqliteMigrator)
    assert migrator.settings == LockSettings(lock_timeout=2, retries=1)
    for operation in (migrator.add_column("t", "c", peewee.IntegerField(null=True)),
                      migrator.drop_column("t", "c"), migrator.rename_table("t", "u"),
                      migrator.add_not_null("t", "c")):
        assert isinstance(operation, LockSafeOperation)
    assert migrator.with_settings(lock_timeout=9).settings.lock_timeout == 9


def test_factory_refuses_an_uninitialized_proxy() -> None:
    with pytest.raises(ConfigurationError, match="not initialized"):
        safe_schema_migrator(peewee.DatabaseProxy())
