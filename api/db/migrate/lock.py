"""The boot-time migration lock, one implementation per engine.

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
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import peewee

from api.db.error_handler import classify_error
from api.db.exceptions import MigrationLockTimeout
from api.db.pool.connect import db_type

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = "api.db.migrate"
# A fixed 64-bit key for pg_advisory_lock, derived from the namespace.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAMESPACE.encode()).digest()[:8], "big", signed=True)
POLL_FIRST = 0.02  # seconds between attempts on PostgreSQL, doubling up to POLL_MAX
POLL_MAX = 0.5
MYSQL_WAIT_STEP = 5.0  # GET_LOCK waits in slices so that the holder can be logged while waiting
MYSQL_LOCK_NAME_MAX = 64


def mysql_lock_name(database_name: str) -> str:
    """``api.db.migrate:<database>``, hashed when longer than MySQL's 64-character limit."""
    name = f"{LOCK_NAMESPACE}:{database_name}"
    if len(name) > MYSQL_LOCK_NAME_MAX:
        name = f"{LOCK_NAMESPACE}:{hashlib.sha256(database_name.encode()).hexdigest()[:40]}"
    return name


def _pg_key_parts(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


def _scalar(cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


def lock_holder(database: peewee.Database) -> dict[str, Any]:
    """Who holds the migration lock now: pid / connection id, application, host, since when (may be empty)."""
    engine = db_type(database)
    try:
        if engine == "postgres":
            classid, objid = _pg_key_parts(PG_LOCK_KEY)
            cursor = database.execute_sql(
                "SELECT a.pid, a.application_name, a.client_addr::text, a.usename, a.backend_start, a.xact_start, "
                "a.state, left(a.query, 200) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
                "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
                (classid, objid),
            )
            row = cursor.fetchone()
            if not row:
                return {}
            keys = ("pid", "application_name", "client_addr", "user", "backend_start", "xact_start", "state", "query")
            return dict(zip(keys, row))
        if engine == "mysql":
            name = mysql_lock_name(str(database.database))
            conn_id = database.execute_sql("SELECT IS_USED_LOCK(%s)", (name,)).fetchone()[0]
            if conn_id is None:
                return {}
            row = database.execute_sql(
                "SELECT ID, USER, HOST, DB, COMMAND, TIME, STATE, LEFT(INFO, 200) "
                "FROM information_schema.PROCESSLIST WHERE ID = %s",
                (conn_id,),
            ).fetchone()
            holder: dict[str, Any] = {"connection_id": conn_id}
            if row:
                keys = ("connection_id", "user", "host", "db", "command", "seconds_in_state", "state", "query")
                holder.update(zip(keys, row))
            return holder
    except peewee.DatabaseError as exc:
        # Reading the holder is best effort: the timeout error is raised anyway.
        logger.warning("could not read the migration lock holder: %s", classify_error(exc, engine).message)
    return {}


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "holder unknown (the lock was released meanwhile, or the server does not say)"
    return ", ".join(f"{k}={v}" for k, v in holder.items() if v not in (None, ""))


def _timeout_error(database: peewee.Database, timeout: float, holder: dict[str, Any]) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"the migration lock was not free within {timeout:g} s; held by {describe_holder(holder)}. "
        "Another instance is probably migrating: wait for it, or, if that session is stuck, end it "
        "(PostgreSQL: SELECT pg_terminate_backend(pid); MySQL: KILL connection_id) and boot again",
        holder=holder,
    )


@contextlib.contextmanager
def _postgres_lock(database: peewee.Database, timeout: float) -> Iterator[None]:
    conn = database.connection()
    deadline = time.monotonic() + timeout
    delay = POLL_FIRST
    logged = False
    while True:
        with conn.cursor() as cur:
            if _scalar(cur, "SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,)):
                break
        if time.monotonic() >= deadline:
            raise _timeout_error(database, timeout, lock_holder(database))
        if not logged:
            logger.info("waiting for the migration lock, held by %s", describe_holder(lock_holder(database)))
            logged = True
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, POLL_MAX)
    logger.debug("migration lock taken (pg_advisory_lock %s)", PG_LOCK_KEY)
    watching = _watch_for_dead_client(conn)
    try:
        yield
    finally:
        if watching:
            _reset_dead_client_check(database, conn)
        _release(database, conn, "SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,))


# PostgreSQL 14+: while this session holds the lock, let the server notice within a
# second that the client died (SIGKILL, node lost) even in the middle of a long
# statement, instead of holding the lock until that statement ends. Reset before the
# connection goes back to the pool.
DEAD_CLIENT_CHECK = "1s"


def _watch_for_dead_client(conn: Any) -> bool:
    if getattr(conn, "server_version", 0) < 140000:
        return False
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET client_connection_check_interval = '{DEAD_CLIENT_CHECK}'")
    except Exception as exc:  # an older or restricted server: the lock works without it
        logger.debug("client_connection_check_interval not set: %s", classify_error(exc, "postgres").message)
        return False
    return True


def _reset_dead_client_check(database: peewee.Database, conn: Any) -> None:
    try:
        with conn.cursor() as cur:
            cur.execute("RESET client_connection_check_interval")
    except Exception as exc:  # a dead connection takes its settings with it
        logger.warning(
            "could not reset client_connection_check_interval: %s", classify_error(exc, db_type(database)).message
        )


@contextlib.contextmanager
def _mysql_lock(database: peewee.Database, timeout: float) -> Iterator[None]:
    conn = database.connection()
    name = mysql_lock_name(str(database.database))
    deadline = time.monotonic() + timeout
    while True:
        remaining = max(0.0, deadline - time.monotonic())
        step = min(remaining, MYSQL_WAIT_STEP)
        with conn.cursor() as cur:
            # MariaDB takes fractional seconds; MySQL rounds them.
            got = _scalar(cur, "SELECT GET_LOCK(%s, %s)", (name, round(step, 3)))
        if got == 1:
            break
        if remaining <= step:
            raise _timeout_error(database, timeout, lock_holder(database))
        logger.info("waiting for the migration lock %s, held by %s", name, describe_holder(lock_holder(database)))
    logger.debug("migration lock taken (GET_LOCK %s)", name)
    try:
        yield
    finally:
        _release(database, conn, "SELECT RELEASE_LOCK(%s)", (name,))


@contextlib.contextmanager
def _sqlite_lock(database: peewee.Database, timeout: float) -> Iterator[None]:
    conn = database.connection()
    previous = conn.execute("PRAGMA busy_timeout").fetchone()[0]
    conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
    txn = database.transaction("IMMEDIATE")
    try:
        try:
            txn.__enter__()
        except peewee.OperationalError as exc:
            if "locked" in str(exc):
                raise MigrationLockTimeout(
                    f"the SQLite database {database.database} stayed locked by another writer for "
                    f"{timeout:g} s (SQLite does not say which process); find the process that holds "
                    "a write transaction on that file and boot again",
                ) from exc
            raise
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(previous)}")
    logger.debug("migration lock taken (BEGIN IMMEDIATE on %s)", database.database)
    try:
        yield
    finally:
        # Commit whatever the run left: each migration's own work was already
        # committed or rolled back to its savepoint, and failed rows must persist.
        try:
            txn.__exit__(None, None, None)
        except peewee.DatabaseError as exc:
            logger.error("could not commit the SQLite migration transaction: %s", classify_error(exc, "sqlite").message)
            raise


def _release(database: peewee.Database, conn: Any, sql: str, params: tuple[Any, ...]) -> None:
    """Release on ``conn``, the DB-API connection that took the lock, whatever this thread holds now."""
    if database.is_closed() or database.connection() is not conn:
        logger.warning("the connection that took the migration lock was swapped; releasing on the original one")
    try:
        with conn.cursor() as cur:
            released = _scalar(cur, sql, params)
    except Exception as exc:  # a dead connection has released its session lock with it
        info = classify_error(exc, db_type(database))
        logger.warning("migration lock not released explicitly (%s: %s)", info.category.value, info.message)
        return
    if released != 1:
        logger.warning("migration lock was not held at release (%s returned %s)", sql.split("(")[0], released)
    else:
        logger.debug("migration lock released")


@contextlib.contextmanager
def migration_lock(database: peewee.Database, *, timeout: float = 300.0) -> Iterator[None]:
    """Hold the migration lock of ``database`` (on this thread's connection) for the ``with`` block.

    Raises :class:`MigrationLockTimeout`, naming the holder, when it is not free within ``timeout`` seconds.
    """
    engine = db_type(database)
    if engine == "postgres":
        manager = _postgres_lock(database, timeout)
    elif engine == "mysql":
        manager = _mysql_lock(database, timeout)
    else:
        manager = _sqlite_lock(database, timeout)
    with manager:
        yield
