"""``migrate_db_async``: boot-time migrations from asyncio code (a FastAPI / Starlette lifespan).

Two kinds of database are accepted:

* a database from :func:`api.db.connect` (the instrumented ``playhouse.pool``): ``migrate_db`` runs in a
  worker thread (``asyncio.to_thread``), so the lock wait and the DDL never block the event loop; the
  thread's pooled connection is handed back when it is done;
* a ``playhouse.pwasyncio`` database (asyncpg, aiomysql, aiosqlite): ``migrate_db`` runs through its
  greenlet bridge (``await db.run(...)``), on the event loop, each query awaited by the driver.

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


def _migrate_in_thread(db: peewee.Database, migrations: list[Any], options: dict[str, Any]) -> MigrationReport:
    """``migrate_db`` holding one connection of the thread, returned to the pool at the end."""
    with db.connection_context():
        return migrate_db(db, migrations, **options)


async def migrate_db_async(
    db: peewee.Database, migrations: Iterable[MigrationLike], **options: Any
) -> MigrationReport:
    """:func:`~api.db.migrate.runner.migrate_db` for asyncio; the same keywords, the same report and errors."""
    items = list(migrations)
    if _is_pwasyncio(db):
        report: MigrationReport = await db.run(migrate_db, db, items, **options)  # type: ignore[attr-defined]
        return report
    return await asyncio.to_thread(_migrate_in_thread, db, items, options)
