"""Capture, instead of execute, the SQL one thread sends through a peewee ``Database``.

:class:`StatementCapture` replaces ``db.execute_sql`` (and ``begin`` / ``commit`` /
``rollback``, which peewee sends straight to a cursor) on the database object while
active. For the thread that activated it:

* reads (``SELECT``, ``SHOW``, ``EXPLAIN``, ``PRAGMA x``, ``DESCRIBE``...) and the
  control statements the lock-safe migrator wraps around DDL (``SAVEPOINT``,
  ``SET LOCAL lock_timeout``, ``PRAGMA busy_timeout``...) reach the server;
* everything else is recorded and answered with an empty result, never sent;
* ``db.cursor()`` hands out cursors that apply the same split (for code that calls
  ``db.cursor().execute(...)`` directly); a cursor from ``db.connection()`` is not covered;
* peewee's ``begin`` / ``commit`` / ``rollback`` only move peewee's transaction
  stack: the caller owns the real (read-only) transaction around the capture.

Other threads using the same (pooled) database object are not affected.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import peewee

from api.db.migrate.sqltext import is_session_control, strip_statement_settings

_READ_START = re.compile(r"^(?:SELECT|SHOW|EXPLAIN|DESCRIBE|DESC|WITH|PRAGMA|VALUES|TABLE)\b", re.IGNORECASE)
# A SELECT that writes or takes row locks is not a read.
_NOT_A_READ = re.compile(
    r"\bINTO\b|\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b"
    r"|\b(?:INSERT|UPDATE|DELETE|MERGE)\b|\bEXPLAIN\s+(?:\(\s*)?ANALY[SZ]E\b|\bnextval\s*\(|\bsetval\s*\("
    r"|\bpg_advisory|\bGET_LOCK\s*\(",
    re.IGNORECASE,
)
# PRAGMAs that change something even without "=".
_WRITING_PRAGMAS = re.compile(
    r"^PRAGMA\s+(?:\w+\.)?(?:optimize|wal_checkpoint|incremental_vacuum|shrink_memory)\b", re.IGNORECASE
)


def is_control(sql: str) -> bool:
    """A savepoint or a lock-wait setting: transaction plumbing, not a change (never COMMIT or ROLLBACK)."""
    return is_session_control(sql)


def is_read(sql: str) -> bool:
    """True for statements that only read (may run during a preview)."""
    text = strip_statement_settings(sql)
    if not _READ_START.match(text):
        return False
    if text[:6].upper() == "PRAGMA":
        return "=" not in text and not _WRITING_PRAGMAS.match(text)
    return not _NOT_A_READ.search(text)


@dataclass(frozen=True)
class CapturedStatement:
    """A statement that would have been sent, exactly as the driver would have received it."""

    sql: str
    params: tuple[Any, ...]
    migration: str


class _NoResult:
    """What a captured statement returns instead of a driver cursor: an empty result."""

    rowcount = 0
    lastrowid = None
    description = None

    def fetchone(self) -> None:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def fetchmany(self, size: int = 1) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __getitem__(self, index: int) -> Any:
        raise IndexError(index)

    def close(self) -> None:
        return None


class _GuardedCursor:
    """A driver cursor for ``db.cursor()`` callers under capture: the read/write split of ``execute_sql``."""

    def __init__(self, cursor: Any, capture: StatementCapture) -> None:
        self._cursor = cursor
        self._capture = capture
        self._captured = False

    def execute(self, sql: str, params: Any = None) -> Any:
        if is_control(sql) or is_read(sql):
            self._captured = False
            return self._cursor.execute(sql) if params is None else self._cursor.execute(sql, params)
        self._capture.record(sql, params)
        self._captured = True
        return None

    def __getattr__(self, name: str) -> Any:
        if self._captured and hasattr(_NoResult, name):
            return getattr(_NoResult(), name)
        return getattr(self._cursor, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(()) if self._captured else iter(self._cursor)

    def __enter__(self) -> _GuardedCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self._cursor.close()


class StatementCapture:
    """Records the writes one thread sends through ``db`` while :meth:`active`; lets reads through."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.statements: list[CapturedStatement] = []
        self.migration = ""
        self._owner: int | None = None

    def _execute_sql(self, sql: str, params: Any = None) -> Any:
        if threading.get_ident() != self._owner or is_control(sql) or is_read(sql):
            return self._original_execute_sql(sql, params)
        self.record(sql, params)
        return _NoResult()

    def record(self, sql: str, params: Any) -> None:
        self.statements.append(CapturedStatement(sql, tuple(params or ()), self.migration))

    def _cursor(self, *args: Any, **kwargs: Any) -> Any:
        cursor = self._original_cursor(*args, **kwargs)
        return cursor if threading.get_ident() != self._owner else _GuardedCursor(cursor, self)

    def _transaction_call(self, name: str) -> Any:
        original = getattr(self.db, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self._owner:
                return original(*args, **kwargs)
            return None  # the caller's read-only transaction is the only real one

        return call

    @contextlib.contextmanager
    def active(self) -> Iterator[StatementCapture]:
        """Capture on ``db`` for this thread until the block ends."""
        if self._owner is not None:
            raise RuntimeError("a StatementCapture cannot be nested")
        self._owner = threading.get_ident()
        self._original_execute_sql = self.db.execute_sql
        self._original_cursor = self.db.cursor
        patched: dict[str, Any] = {"execute_sql": self._execute_sql, "cursor": self._cursor}
        for name in ("begin", "commit", "rollback"):
            patched[name] = self._transaction_call(name)
        previous: dict[str, Any] = {name: self.db.__dict__.get(name) for name in patched}
        for name, value in patched.items():
            setattr(self.db, name, value)
        try:
            yield self
        finally:
            for name, value in previous.items():
                if value is None:
                    delattr(self.db, name)
                else:
                    setattr(self.db, name, value)
            self._owner = None
