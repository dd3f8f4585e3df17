"""``migrate_db_async``: boot-time migrations from asyncio code (a FastAPI / Starlette lifespan).

Two kinds of database are accepted:

* a database from :func:`api.db.connect` (the instrumented ``playhouse.pool``): ``migrate_db`` runs in a
  worker thread (``asyncio.to_thread``), so the lock wait and the DDL never block the event loop; the
  thread's pooled connection is handed back when it is done;
* a ``playhouse.pwasyncio`` database (asyncpg, aiomysql, aiosqlite): the migrations run in a worker
  thread on a short-lived synchronous twin of it (the same peewee family, database and connect
  parameters). Not through its greenlet bridge (``await db.run(...)``): the migration lock and the
  session settings need a DB-API connection, and pwasyncio's connection wrapper answers with coroutines.

``playhouse.pwasyncio`` is not used for the pool itself: its pools (asyncpg's, aiomysql's) have none of
api.db's bounded waits, counters, leak tracking or session reset, which the probes and metrics read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import peewee

from api.db.migrate.declarations import MigrationLike
from api.db.migrate.runner import MigrationReport, migrate_db


def _is_pwasyncio(db: peewee.Database) -> bool:
    try:
        from playhouse.pwasyncio import AsyncDatabaseMixin
    except ImportError:  # greenlet missing: no pwasyncio database can exist either
        return False
    return isinstance(db, AsyncDatabaseMixin)


def _sync_twin(db: peewee.Database) -> peewee.Database:
    """A plain peewee database of the same family, database and connect parameters as a pwasyncio one."""
    family = next(cls for cls in type(db).__mro__[1:]
                  if issubclass(cls, peewee.Database)
                  and not cls.__module__.startswith("playhouse.pwasyncio"))  # fmt: skip
    twin: peewee.Database = family(db.database, **dict(db.connect_params))
    return twin


def _migrate_on_twin(db: peewee.Database, migrations: list[Any], options: dict[str, Any]) -> MigrationReport:
    twin = _sync_twin(db)
    try:
        return _migrate_in_thread(twin, migrations, options)
    finally:
        twin.close()


def _migrate_in_thread(
    db: peewee.Database, migrations: list[Any], options: dict[str, Any]
) -> MigrationReport:
    """``migrate_db`` holding one connection of the thread, returned to the pool at the end."""
    with db.connection_context():
        return migrate_db(db, migrations, **options)


async def migrate_db_async(
    db: peewee.Database, migrations: Iterable[MigrationLike], **options: Any
) -> MigrationReport:
    """:func:`~api.db.migrate.runner.migrate_db` for asyncio: the same keywords, report and errors."""
    items = list(migrations)
    if _is_pwasyncio(db):
        return await asyncio.to_thread(_migrate_on_twin, db, items, options)
    return await asyncio.to_thread(_migrate_in_thread, db, items, options)
