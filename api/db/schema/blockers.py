"""Who holds the lock a DDL statement waited for: the sessions an operator must end or wait out.

PostgreSQL: ``pg_locks`` joined with ``pg_stat_activity`` (granted locks on the
table), else the oldest open transactions of the database. MySQL:
``performance_schema.metadata_locks``; MariaDB: ``information_schema.METADATA_LOCK_INFO``
when its plugin is installed; both fall back to open InnoDB transactions
(``INNODB_TRX`` with ``PROCESSLIST``). SQLite cannot say which connection holds its lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import peewee

from api.db.engines import engine_for
from api.db.error_handler import StandardErrorHandler
from api.db.redact import redact_text

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 200


@dataclass(frozen=True)
class BlockingSession:
    """One session holding (or likely holding) a lock another statement waits for."""

    session_id: int  # PostgreSQL pid, MySQL/MariaDB connection id
    query: str  # its current or last statement ("" when the server does not say)
    state: str  # active, idle in transaction, Sleep, ...
    running_for: float | None  # seconds since its transaction (or statement) began
    lock_mode: str = ""  # the lock it holds on the table, when known
    user: str = ""
    application_name: str = ""

    def describe(self) -> str:
        age = f"{self.running_for:.1f} s" if self.running_for is not None else "an unknown time"
        what = f"holding {self.lock_mode}, " if self.lock_mode else ""
        query = self.query or "(no statement reported)"
        app = f" ({self.application_name})" if self.application_name else ""
        return (
            f"session {self.session_id}{app}: {what}{self.state or 'unknown state'} for {age}, query: {query}"
        )


def _short(text: Any) -> str:
    one_line = " ".join(str(text or "").split())
    if len(one_line) > MAX_QUERY_CHARS:
        one_line = one_line[: MAX_QUERY_CHARS - 3] + "..."
    return redact_text(one_line)


def _session(row: tuple[Any, ...]) -> BlockingSession:
    session_id, query, state, running_for, lock_mode, user, app = row
    return BlockingSession(
        session_id=int(session_id),
        query=_short(query),
        state=str(state or ""),
        running_for=None if running_for is None else float(running_for),
        lock_mode=str(lock_mode or ""),
        user=str(user or ""),
        application_name=str(app or ""),
    )


def _fetch(database: peewee.Database, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    if engine_for(database).failed_statement_aborts_transaction:
        # A savepoint inside the caller's transaction: a failing lookup must not abort it.
        with database.atomic():
            return list(database.execute_sql(sql, params).fetchall())
    return list(database.execute_sql(sql, params).fetchall())


def _rows(database: peewee.Database, sql: str, params: tuple[Any, ...] = ()) -> list[BlockingSession] | None:
    """The sessions ``sql`` lists, or None when the view is missing or unreadable (logged)."""
    try:
        rows = _fetch(database, sql, params)
    except peewee.DatabaseError as exc:
        info = StandardErrorHandler.classify(exc, engine_for(database).name)
        logger.info("blocker lookup not available here (%s): %s", info.category.value, info.message)
        return None
    return [_session(row) for row in rows]


def find_blockers(
    database: peewee.Database, table: str | None, *, schema: str | None = None
) -> list[BlockingSession]:
    """The sessions holding locks on ``table`` (or, failing that, open transactions that may hold them)."""
    for sql, params in engine_for(database).blocker_queries(table, schema):
        found = _rows(database, sql, params)
        if found:
            return found
    return []  # SQLite has no view of other connections
