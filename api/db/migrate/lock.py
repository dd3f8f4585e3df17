"""The boot-time migration lock: which strategy holds it here, and one handle for the runner.

Strategies (``migrate_db(lock=...)``, env ``API_DB_MIGRATION_LOCK``; the keyword wins):

* ``advisory``: the engine's session lock (``pg_try_advisory_lock``, ``GET_LOCK``), taken and
  released on the very same DB-API connection, and allowed only on a session verified pinned:
  the driver's backend id equals the server's in two separate transactions, and the session
  lock is not node-local (Galera: ``wsrep_on=ON``). A failed unlock is :class:`MigrationLockLost`.
* ``lease``: one row of ``migration_lock`` (:mod:`api.db.migrate.lease`), for transaction poolers,
  session poolers, Galera and SQLite; expiry ``lease_ttl`` (env ``API_DB_LEASE_TTL``, 30 s).
* ``auto`` (default): advisory where the session is verified pinned, the lease otherwise.

:func:`acquire_migration_lock` returns a handle with ``strategy``, ``reason``, ``owner``,
``generation``, ``check()``, ``fenced()`` (the tracker's history writes) and ``release()``.
On timeout, :class:`MigrationLockTimeout` says who holds the lock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from typing import Any, Protocol, cast

import peewee

from api.db.engines import engine_for
from api.db.engines.base import LOCK_NAMESPACE, Engine, describe_holder
from api.db.engines.mysql import mysql_lock_name
from api.db.engines.postgres import PG_LOCK_KEY
from api.db.exceptions import ConfigurationError, MigrationLockLost
from api.db.migrate.lease import DEFAULT_TTL, MIN_TTL, Lease

logger = logging.getLogger(__name__)

__all__ = [
    "LOCK_NAMESPACE",
    "PG_LOCK_KEY",
    "AdvisoryLock",
    "MigrationLockHandle",
    "acquire_migration_lock",
    "choose_strategy",
    "describe_holder",
    "lock_holder",
    "lock_settings",
    "migration_lock",
    "mysql_lock_name",
]

STRATEGIES = ("auto", "advisory", "lease")
LOCK_ENV = "API_DB_MIGRATION_LOCK"
TTL_ENV = "API_DB_LEASE_TTL"


class MigrationLockHandle(Protocol):
    """What the runner and the tracker use of a held migration lock, whatever its strategy."""

    strategy: str
    reason: str
    owner: str
    generation: int | None

    @property
    def fence(self) -> peewee.ColumnBase | None:
        """A condition a history write can carry (the lease row still ours); None: the session is it."""

    def check(self) -> None: ...

    def fenced(self) -> contextlib.AbstractContextManager[None]: ...

    def release(self) -> None: ...


# -- settings -------------------------------------------------------------------------


def lock_settings(lock: str | None = None, lease_ttl: float | None = None) -> tuple[str, float]:
    """The strategy and lease ttl: the keyword, else the environment variable, else auto and 30 s."""
    strategy = lock if lock is not None else (os.environ.get(LOCK_ENV, "").strip().lower() or "auto")
    if strategy not in STRATEGIES:
        source = "lock" if lock is not None else LOCK_ENV
        known = ", ".join(map(repr, STRATEGIES))
        raise ConfigurationError(f"{source} must be one of {known}, got {strategy!r}")
    return strategy, _ttl(lease_ttl)


def _ttl(lease_ttl: float | None) -> float:
    raw: Any = lease_ttl
    source = "lease_ttl"
    if raw is None:
        raw, source = os.environ.get(TTL_ENV, "").strip() or DEFAULT_TTL, TTL_ENV
    try:
        ttl = float(raw) if not isinstance(raw, bool) else math.nan
    except (TypeError, ValueError):
        ttl = math.nan
    if not ttl >= MIN_TTL or math.isinf(ttl):
        raise ConfigurationError(f"{source} must be a number of seconds >= {MIN_TTL:g}, got {raw!r}")
    return ttl


def choose_strategy(engine: Engine, conn: Any, requested: str) -> tuple[str, str]:
    """(strategy, why) for ``requested`` on ``conn``: the pin check decides ``auto``."""
    if requested == "lease":
        return "lease", "requested"
    problem = engine.pin_problem(conn)
    if problem is None:
        return "advisory", "requested; session pinned" if requested == "advisory" else "session pinned"
    if requested == "advisory":
        raise ConfigurationError(
            f"lock='advisory' needs a session pinned to one server session, and this one is not: {problem}; "
            "use lock='lease' (or 'auto', which picks it here)"
        )
    return "lease", problem


# -- the advisory handle --------------------------------------------------------------------


class AdvisoryLock:
    """The engine's session lock held on one DB-API connection of a verified-pinned session."""

    strategy = "advisory"
    generation: int | None = None
    fence: peewee.ColumnBase | None = None  # the session itself is the fence: see check()

    def __init__(self, db: peewee.Database, engine: Engine, conn: Any, reason: str) -> None:
        self.db = db
        self.engine = engine
        self.conn = conn
        self.reason = reason
        self.owner = engine.session_id(conn)
        self._changed = False

    def acquire(self, timeout: float) -> None:
        self._changed = self.engine.lock_session(self.conn, timeout)
        # The lock lives on this connection: the pool must not swap a dead one for a fresh one under the
        # run (a statement would then run unlocked); the next statement fails as connection_lost instead.
        cast(Any, self.db)._state.keep_connection = True

    def check(self) -> None:
        """The lock lives in the session: this thread must still use the connection that took it."""
        gone = self.db.is_closed() or self.db.connection() is not self.conn
        if gone or self.engine.session_closed(self.conn):
            raise MigrationLockLost(
                f"the connection that holds the migration lock ({self.engine.lock_label()}) is no longer "
                "this thread's connection (it was closed or replaced); nothing more is written under it",
                strategy=self.strategy,
                owner=self.owner,
            )

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        self.check()
        yield

    def release(self) -> None:
        cast(Any, self.db)._state.keep_connection = False
        self.engine.unlock_session(self.conn, self._changed)


# -- entry points ---------------------------------------------------------------------------


def acquire_migration_lock(
    db: peewee.Database, strategy: str = "auto", timeout: float = 300.0, ttl: float = DEFAULT_TTL
) -> MigrationLockHandle:
    """Take the migration lock of ``db`` with ``strategy``; logs which lock and why (INFO)."""
    engine = engine_for(db)
    conn = db.connection()
    chosen, reason = choose_strategy(engine, conn, strategy)
    handle: AdvisoryLock | Lease
    if chosen == "advisory":
        handle = AdvisoryLock(db, engine, conn, reason)
    else:
        handle = Lease(db, ttl, reason=reason)
    handle.acquire(timeout)
    logger.info(
        "migration lock: %s (%s)%s", chosen, reason,
        f", lease ttl {ttl:g} s, generation {handle.generation}" if chosen == "lease" else "",
    )  # fmt: skip
    return handle


def lock_holder(database: peewee.Database) -> dict[str, Any]:
    """Who holds the migration lock now: the lease holder, else the session lock's (may be empty)."""
    return Lease(database).holder() or engine_for(database).lock_holder()


@contextlib.contextmanager
def migration_lock(
    database: peewee.Database,
    *,
    timeout: float = 300.0,
    lock: str | None = None,
    lease_ttl: float | None = None,
) -> Iterator[MigrationLockHandle]:
    """Hold the migration lock of ``database`` for the ``with`` block (``auto`` unless told otherwise).

    Raises :class:`MigrationLockTimeout`, naming the holder, when it is not free within ``timeout``
    seconds, and :class:`MigrationLockLost` when it was lost before its release. An error of the
    block wins over a failed release (which is then logged).
    """
    strategy, ttl = lock_settings(lock, lease_ttl)
    handle = acquire_migration_lock(database, strategy, timeout, ttl)
    try:
        yield handle
    except BaseException:
        try:
            handle.release()
        except MigrationLockLost as lost:
            logger.error("%s", lost)
        raise
    handle.release()
