"""Lock naming and the holder text, without a server."""

from __future__ import annotations

from api.db.engines.base import LOCK_NAMESPACE, describe_holder
from api.db.engines.mysql import MYSQL_LOCK_NAME_MAX, mysql_lock_name
from api.db.engines.postgres import PG_LOCK_KEY, pg_key_parts


def test_mysql_lock_name_carries_the_database_and_fits() -> None:
    assert mysql_lock_name("app") == f"{LOCK_NAMESPACE}:app"
    long_name = mysql_lock_name("d" * 64)
    assert len(long_name) <= MYSQL_LOCK_NAME_MAX and long_name != mysql_lock_name("e" * 64)


def test_pg_key_splits_as_pg_locks_shows_it() -> None:
    classid, objid = pg_key_parts(PG_LOCK_KEY)
    assert ((classid << 32) | objid) == PG_LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    assert 0 <= classid < 2**32 and 0 <= objid < 2**32
    assert -(2**63) <= PG_LOCK_KEY < 2**63


def test_describe_holder() -> None:
    assert describe_holder({"pid": 42, "application_name": "", "state": "idle"}) == "pid=42, state=idle"
    assert "holder unknown" in describe_holder({})
