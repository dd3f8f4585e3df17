"""Transaction logging: begin, commit and rollback of migration transactions and savepoints, at DEBUG.

Records go to the ``api.db.migrate.transactions`` logger with the fields ``event`` (``begin``,
``commit``, ``rollback``), ``transaction`` (``transaction`` or ``savepoint``), ``isolation_level``,
``duration_ms`` (on commit and rollback), ``migration`` / ``migrations`` and ``engine``. With DEBUG off
for that logger the wrapper costs one ``isEnabledFor`` test: the isolation level is asked of the
server (one round trip, at the start of a transaction; savepoints reuse it) only when DEBUG is on.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import peewee

from api.db.engines import engine_for
from api.db.error_handler import classify_error

logger = logging.getLogger("api.db.migrate.transactions")

TRANSACTION = "transaction"
SAVEPOINT = "savepoint"
_levels = threading.local()  # this thread's stack of the isolation levels of the transactions it logs


def _stack() -> list[str]:
    stack: list[str] | None = getattr(_levels, "stack", None)
    if stack is None:
        stack = _levels.stack = []
    return stack


def _isolation_level(db: peewee.Database, kind: str) -> str:
    """The level of the enclosing transaction for a savepoint; the server's answer for a transaction."""
    stack = _stack()
    if kind == SAVEPOINT:
        return stack[-1] if stack else "unknown"
    engine = engine_for(db)
    try:
        return engine.isolation_level()
    except peewee.DatabaseError as exc:  # only a log line depends on it
        logger.debug("isolation level not readable: %s", classify_error(exc, engine.name).message)
        return "unknown"


class TransactionLogger:
    """Logs one transaction or savepoint: its begin with the isolation level, its end with the duration."""

    def __init__(self, db: peewee.Database, kind: str, migrations: Sequence[str]) -> None:
        self.db = db
        self.kind = kind
        self.fields: dict[str, Any] = {"transaction": kind, "engine": engine_for(db).name}
        names = [name for name in migrations if name]
        if len(names) == 1:
            self.fields["migration"] = names[0]
        elif names:
            self.fields["migrations"] = names
        self.started = 0.0

    def begin(self) -> None:
        """Read the isolation level and log the start."""
        self.fields["isolation_level"] = level = _isolation_level(self.db, self.kind)
        _stack().append(level)
        self.started = time.perf_counter()
        logger.debug("begin %s (isolation %s)", self.kind, level, extra={**self.fields, "event": "begin"})

    def end(self, outcome: str) -> None:
        """Log ``commit`` or ``rollback`` with the duration since the begin."""
        stack = _stack()
        if stack:
            stack.pop()
        duration = round((time.perf_counter() - self.started) * 1000, 3)
        logger.debug(
            "%s of %s (isolation %s) after %.1f ms",
            outcome, self.kind, self.fields["isolation_level"], duration,
            extra={**self.fields, "event": outcome, "duration_ms": duration},
        )  # fmt: skip


@contextlib.contextmanager
def logged_transaction(
    db: peewee.Database,
    transaction: contextlib.AbstractContextManager[Any],
    *,
    kind: str = TRANSACTION,
    migrations: Sequence[str] = (),
) -> Iterator[None]:
    """Enter ``transaction`` (``db.atomic()``, ``db.savepoint()``) for the block, logging it at DEBUG."""
    if not logger.isEnabledFor(logging.DEBUG):
        with transaction:
            yield
        return
    log = TransactionLogger(db, kind, migrations)
    begun = False
    try:
        with transaction:
            log.begin()
            begun = True
            yield
    except BaseException:
        if begun:
            log.end("rollback")
        raise
    log.end("commit")
