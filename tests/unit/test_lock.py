"""Lock naming and the holder text, without a server."""

from __future__ import annotations

from api.db.migrate.lock import (
    LOCK_NAMESPACE,
    MYSQL_LOCK_NAME_MAX,
    PG_LOCK_KEY,
    _pg_key_parts,
    describe_holder,
    mysql_lock_name,
)


def test_mysql_lock_name_carries_the_database_and_fits() -> None:
    assert mysql_lock_name("app") == f"{LOCK_NAMESPACE}:app"
    long_name = mysql_lock_name("d" * 64)
    assert len(long_name) <= MYSQL_LOCK_NAME_MAX and long_name != mysql_lock_name("e" * 64)


def test_pg_key_splits_as_pg_locks_shows_it() -> None:
    classid, objid = _pg_key_parts(PG_LOCK_KEY)
    assert ((classid << 32) | objid) == PG_LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    assert 0 <= classid < 2**32 and 0 <= objid < 2**32
    assert -(2**63) <= PG_LOCK_KEY < 2**63


def test_describe_holder() -> None:
    assert describe_holder({"pid": 42, "application_name": "", "state": "idle"}) == "pid=42, state=idle"
    assert "holder unknown" in describe_holder({})
