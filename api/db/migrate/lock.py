"""The boot-time migration lock; each engine's mechanism lives in ``api/db/engines/``.

* PostgreSQL: a session-level advisory lock (``pg_try_advisory_lock``), polled
  until ``timeout``. Advisory locks are scoped to the current database.
* MySQL/MariaDB: ``GET_LOCK(name, seconds)``; the name carries the database name
  because MySQL lock names are server-wide.
* SQLite: a ``BEGIN IMMEDIATE`` transaction, held for the whole run
  (``busy_timeout`` set to the lock timeout while waiting).

Session-level locks outlive a pooled connection's return to the pool, so the lock
is taken and released on the very same DB-API connection, in ``finally``; if the
connection of this thread changed in between, the original one is unlocked directly.
On timeout, :class:`MigrationLockTimeout` says who holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import peewee

from api.db.engines import engine_for
from api.db.engines.base import LOCK_NAMESPACE, describe_holder
from api.db.engines.mysql import mysql_lock_name
from api.db.engines.postgres import PG_LOCK_KEY

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAMESPACE", "PG_LOCK_KEY", "describe_holder", "lock_holder", "migration_lock",
           "mysql_lock_name"]


def lock_holder(database: peewee.Database) -> dict[str, Any]:
    """Who holds the migration lock now: pid / connection id, application, host, since when (may be empty)."""
    return engine_for(database).lock_holder()


@contextlib.contextmanager
def migration_lock(database: peewee.Database, *, timeout: float = 300.0) -> Iterator[None]:
    """Hold the migration lock of ``database`` (on this thread's connection) for the ``with`` block.

    Raises :class:`MigrationLockTimeout`, naming the holder, when it is not free within ``timeout`` seconds.
    """
    with engine_for(database).migration_lock(timeout):
        yield
