"""Statements per migration beyond its own DDL, counted with peewee's query_hooks: they cannot grow back.

The bound (issue 18): at most 2 per migration in the default mode, ``atomic="each"`` at most 2 more
(its begin and commit). The exact figures of today are the ceiling, per engine and mode; on PostgreSQL
and MySQL the driver sends BEGIN / COMMIT itself (not seen by the hooks), on SQLite they are savepoints.
"""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from api.db import connect, migrate_db
from api.db.engines import engine_for
from api.db.migrate.declarations import Migration

# (engine family, atomic) -> statements per migration beyond its DDL, as the hooks see them
CEILING = {
    ("sqlite", "all"): 1,  # the history upsert (the lock's BEGIN IMMEDIATE holds the run)
    ("sqlite", "each"): 3,  # SAVEPOINT, the upsert, RELEASE
    ("postgres", "all"): 1,  # the upsert (SET LOCAL lock_timeout once per transaction)
    ("postgres", "each"): 2,  # SET LOCAL lock_timeout, the upsert (+ BEGIN, COMMIT by the driver)
    ("mysql", "all"): 2,  # the running row after the operation, then success (no transactional DDL)
    ("mysql", "each"): 2,
}
BOUND = {"all": 2, "each": 4}


def _add(i: int) -> Migration:
    def fn(m: Any) -> None:
        m.add_column("counted", f"c{i}", peewee.IntegerField(null=True))

    return Migration(f"{i:04d}_add_c{i}", fn)


def _close(database: Any) -> None:
    getattr(database, "close_all", database.close)()


def _count(database: Any, migrations: list[Migration], atomic: str) -> tuple[int, int]:
    """(statements, of which DDL of the migrations) sent by one migrate_db run."""
    sent: list[str] = []
    hook = lambda event: sent.append(event.sql)  # noqa: E731
    database.query_hooks.append(hook)
    try:
        report = migrate_db(database, migrations, atomic=atomic)
    finally:
        database.query_hooks.remove(hook)
    assert report.up_to_date and not report.failed
    ddl = sum(1 for sql in sent if "ALTER TABLE" in sql and ('"counted"' in sql or "`counted`" in sql))
    return len(sent), ddl


@pytest.mark.parametrize("atomic", ["all", "each"])
def test_statements_per_migration_stay_within_the_bound(db_url: str, atomic: str) -> None:
    database: Any = connect(db_url, environ={})
    try:
        database.execute_sql("CREATE TABLE counted (id INTEGER PRIMARY KEY)")
        family = engine_for(database).name
        declared = [_add(0)]
        _count(database, declared, atomic)  # tracking tables made
        declared.append(_add(1))
        one, one_ddl = _count(database, declared, atomic)  # one pending: the run's fixed costs + 1
        declared += [_add(i) for i in range(2, 22)]
        many, many_ddl = _count(database, declared, atomic)  # twenty pending
        assert (one_ddl, many_ddl) == (1, 20)
        per_migration = ((many - many_ddl) - (one - one_ddl)) / 19
        assert per_migration <= CEILING[(family, atomic)] <= BOUND[atomic], (family, atomic, per_migration)
        noop, _ = _count(database, declared, atomic)
        assert noop == 1  # the no-op boot: one statement
    finally:
        _close(database)
