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

from api.db.engines import db_type
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
        return f"session {self.session_id}{app}: {what}{self.state or 'unknown state'} for {age}, query: {query}"


def _short(text: Any) -> str:
    one_line = " ".join(str(text or "").split())
    if len(one_line) > MAX_QUERY_CHARS:
        one_line = one_line[: MAX_QUERY_CHARS - 3] + "..."
    return redact_text(one_line)


_PG_TABLE_HOLDERS = """
SELECT a.pid, a.query, coalesce(a.state, ''),
       EXTRACT(EPOCH FROM (clock_timestamp() - coalesce(a.xact_start, a.query_start)))::float8,
       string_agg(DISTINCT l.mode, ', '), coalesce(a.usename::text, ''), coalesce(a.application_name, '')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.relation = to_regclass(%s)
  AND l.pid <> pg_backend_pid()
GROUP BY a.pid, a.query, a.state, a.xact_start, a.query_start, a.usename, a.application_name
ORDER BY 4 DESC NULLS LAST
"""

_PG_OPEN_TRANSACTIONS = """
SELECT a.pid, a.query, coalesce(a.state, ''),
       EXTRACT(EPOCH FROM (clock_timestamp() - a.xact_start))::float8,
       '', coalesce(a.usename::text, ''), coalesce(a.application_name, '')
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
ORDER BY a.xact_start
LIMIT 10
"""

_MYSQL_PERFORMANCE_SCHEMA = """
SELECT t.PROCESSLIST_ID, coalesce(p.INFO, ''), coalesce(p.COMMAND, ''),
       coalesce(TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, p.TIME),
       GROUP_CONCAT(DISTINCT m.LOCK_TYPE), coalesce(p.USER, ''), ''
FROM performance_schema.metadata_locks m
JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.PROCESSLIST_ID
LEFT JOIN information_schema.INNODB_TRX x ON x.trx_mysql_thread_id = t.PROCESSLIST_ID
WHERE m.OBJECT_SCHEMA = DATABASE() AND m.OBJECT_NAME = %s AND m.LOCK_STATUS = 'GRANTED'
  AND t.PROCESSLIST_ID <> CONNECTION_ID()
GROUP BY t.PROCESSLIST_ID, p.INFO, p.COMMAND, x.trx_started, p.TIME, p.USER
"""

_MARIADB_METADATA_LOCK_INFO = """
SELECT m.THREAD_ID, coalesce(p.INFO, ''), coalesce(p.COMMAND, ''),
       coalesce(TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, p.TIME),
       GROUP_CONCAT(DISTINCT m.LOCK_MODE), coalesce(p.USER, ''), ''
FROM information_schema.METADATA_LOCK_INFO m
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID
LEFT JOIN information_schema.INNODB_TRX x ON x.trx_mysql_thread_id = m.THREAD_ID
WHERE m.TABLE_SCHEMA = DATABASE() AND m.TABLE_NAME = %s AND m.THREAD_ID <> CONNECTION_ID()
GROUP BY m.THREAD_ID, p.INFO, p.COMMAND, x.trx_started, p.TIME, p.USER
"""

# Without a metadata-lock view: the open InnoDB transactions of sessions using this database.
_MYSQL_OPEN_TRANSACTIONS = """
SELECT p.ID, coalesce(p.INFO, x.trx_query, ''), coalesce(p.COMMAND, ''),
       TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, '', coalesce(p.USER, ''), ''
FROM information_schema.INNODB_TRX x
JOIN information_schema.PROCESSLIST p ON p.ID = x.trx_mysql_thread_id
WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE()
ORDER BY x.trx_started
LIMIT 10
"""


def _rows(database: peewee.Database, sql: str, params: tuple[Any, ...] = ()) -> list[BlockingSession] | None:
    """The sessions ``sql`` lists, or None when the view is missing or unreadable (logged)."""
    try:
        if db_type(database) == "postgres":
            # A savepoint inside the caller's transaction: a failing lookup must not abort it.
            with database.atomic():
                rows = database.execute_sql(sql, params).fetchall()
        else:
            rows = database.execute_sql(sql, params).fetchall()
    except peewee.DatabaseError as exc:
        info = StandardErrorHandler.classify(exc, db_type(database))
        logger.info("blocker lookup not available here (%s): %s", info.category.value, info.message)
        return None
    sessions = []
    for session_id, query, state, running_for, lock_mode, user, app in rows:
        sessions.append(
            BlockingSession(
                session_id=int(session_id),
                query=_short(query),
                state=str(state or ""),
                running_for=None if running_for is None else float(running_for),
                lock_mode=str(lock_mode or ""),
                user=str(user or ""),
                application_name=str(app or ""),
            )
        )
    return sessions


def find_blockers(database: peewee.Database, table: str | None, *, schema: str | None = None) -> list[BlockingSession]:
    """The sessions holding locks on ``table`` (or, failing that, open transactions that may hold them)."""
    engine = db_type(database)
    if engine == "postgres":
        found: list[BlockingSession] | None = None
        if table:
            qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
            found = _rows(database, _PG_TABLE_HOLDERS, (qualified,))
        return found or _rows(database, _PG_OPEN_TRANSACTIONS) or []
    if engine == "mysql":
        if table:
            for sql in (_MYSQL_PERFORMANCE_SCHEMA, _MARIADB_METADATA_LOCK_INFO):
                found = _rows(database, sql, (table,))
                if found:
                    return found
        return _rows(database, _MYSQL_OPEN_TRANSACTIONS) or []
    return []  # SQLite has no view of other connections
