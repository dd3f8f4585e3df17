"""m.backfill's settings and keys, without a server."""

from __future__ import annotations

import pytest
from peewee import SQL

from api.db.exceptions import ConfigurationError, MigrationDeclarationError
from api.db.migrate.backfill import Backfill, BackfillSpec, BackfillStats, decode_key, encode_key


@pytest.mark.parametrize(
    "changes",
    [{"batch_size": 0}, {"batch_size": True}, {"batch_size": 2.5}, {"pause": -1}, {"pause": "1"},
     {"where": "name IS NULL"}, {"throttle": 3}],
)  # fmt: skip
def test_bad_settings_are_configuration_errors(changes: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        BackfillSpec("t", "c", 1, **changes)  # type: ignore[arg-type]


def test_good_settings() -> None:
    spec = BackfillSpec("t", "c", SQL("c + 1"), where=SQL("c IS NULL"), batch_size=1, pause=0.5,
                        throttle=lambda: 0.0)  # fmt: skip
    assert spec.batch_size == 1


@pytest.mark.parametrize("key", [0, 17, 2**40, "k00001", "", "a\"b", "ünï"])
def test_keys_round_trip_with_their_type(key: object) -> None:
    assert decode_key(encode_key(key)) == key
    assert type(decode_key(encode_key(key))) is type(key)


def test_other_keys_are_stored_as_text() -> None:
    import uuid

    value = uuid.uuid4()
    assert decode_key(encode_key(value)) == str(value)
    assert decode_key(None) is None


def test_declaration_checks() -> None:
    with pytest.raises(MigrationDeclarationError, match="atomic=False"):
        Backfill.check_declaration("m1", atomic=True, in_transaction=False)
    with pytest.raises(MigrationDeclarationError, match="outside db.atomic"):
        Backfill.check_declaration("m1", atomic=False, in_transaction=True)
    Backfill.check_declaration("m1", atomic=False, in_transaction=False)


def test_rate() -> None:
    assert BackfillStats().rate == 0.0
    assert BackfillStats(rows=1000, seconds=2.0).rate == 500.0
