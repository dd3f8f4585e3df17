"""``m.backfill``: set a column on every row of a large table in primary-key ranges, batch by batch.

Each batch is one short transaction: the ``UPDATE`` of one key range (through the lock-safe
migrator, so its lock wait is bounded and retried like DDL) and the history row's
``progress_key`` (the last key done, fenced like every progress write) commit together. A
process killed between batches resumes after the last committed one and never updates a row
twice. A backfill cannot be part of a migration's transaction: a migration that calls it must
be declared ``Migration(..., atomic=False)`` on every engine (:class:`MigrationDeclarationError`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peewee
from playhouse.migrate import SchemaMigrator

from api.db.exceptions import ConfigurationError, MigrationDeclarationError, MissingPrimaryKey
from api.db.schema.ddl import DDLStep

logger = logging.getLogger(__name__)

LOG_EVERY = 5.0  # seconds between progress lines at INFO

Throttle = Callable[[], float]  # called between batches: seconds to wait first (e.g. replica lag too high)


@dataclass(frozen=True)
class BackfillSpec:
    """What one ``m.backfill`` call asks for, checked on construction."""

    table: str
    column: str
    value: Any  # a plain value (sent as a parameter) or a peewee SQL / expression
    where: Any = None  # a peewee SQL / expression limiting the rows updated
    batch_size: int = 10_000
    pause: float = 0.0
    throttle: Throttle | None = None

    def __post_init__(self) -> None:
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigurationError(f"backfill batch_size must be an integer >= 1, got {self.batch_size!r}")
        if isinstance(self.pause, bool) or not isinstance(self.pause, (int, float)) or not self.pause >= 0:
            raise ConfigurationError(f"backfill pause must be a number of seconds >= 0, got {self.pause!r}")
        if self.where is not None and not isinstance(self.where, peewee.Node):
            raise ConfigurationError(
                "backfill where= must be a peewee SQL or expression, e.g. SQL('name IS NULL')"
            )
        if self.throttle is not None and not callable(self.throttle):
            raise ConfigurationError("backfill throttle= must be a callable returning seconds to wait")


@dataclass
class BackfillStats:
    """What a backfill did in this run: rows in the ranges updated, batches, time, the longest batch."""

    rows: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_batch_ms: float = 0.0  # the slowest UPDATE statement, lock wait included
    longest_read_ms: float = 0.0  # the slowest search for a range's upper key
    resumed_after: Any = None  # the key an earlier run had reached, None for a fresh start
    last_key: Any = None

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def encode_key(key: Any) -> str:
    """A primary key as the history's ``progress_key`` (JSON keeps integers and strings apart)."""
    return json.dumps(key if isinstance(key, (int, str)) else str(key))


def decode_key(text: str | None) -> Any:
    """The key ``encode_key`` wrote, None for none."""
    return None if text is None else json.loads(text)


def primary_key(db: peewee.Database, table: str, schema: str | None) -> str:
    """The single primary-key column of ``table``; :class:`MissingPrimaryKey` when it has none or several."""
    keys = db.get_primary_keys(table, schema)
    if len(keys) == 1:
        return str(keys[0])
    what = "no primary key" if not keys else f"a composite primary key ({', '.join(keys)})"
    raise MissingPrimaryKey(
        f"backfill of {table} needs a single-column primary key to walk the table in ranges, and {table} has "
        f"{what}: add one first (e.g. an auto-increment id column in an earlier migration), or update "
        "the table with m.sql(...) in batches of your own",
        table=table,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 120 else f"{seconds:.0f} s"


@dataclass
class Backfill:
    """One backfill run: find each range's upper key, update the range, record the key, repeat."""

    db: peewee.Database
    schema_migrator: SchemaMigrator
    spec: BackfillSpec
    migration: str = ""
    on_batch: Callable[[str], None] | None = None  # the fenced progress write, inside the batch transaction
    stats: BackfillStats = field(default_factory=BackfillStats)

    def __post_init__(self) -> None:
        schema = getattr(self.schema_migrator, "schema", None) or None
        self.key_name = primary_key(self.db, self.spec.table, schema)
        self.source = peewee.Table(self.spec.table, schema=schema).bind(self.db)
        self.key = self.source.c[self.key_name]
        self._logged_at = time.monotonic()

    @staticmethod
    def check_declaration(migration: str, atomic: bool, in_transaction: bool) -> None:
        """A backfill commits batch by batch: refuse it in an atomic migration or a caller's transaction."""
        if atomic:
            raise MigrationDeclarationError(
                f"migration {migration!r} calls m.backfill, which commits each batch on its own and cannot "
                "run in the migration's transaction: declare it Migration(..., atomic=False) (on every "
                "engine, so it behaves the same everywhere)"
            )
        if in_transaction:
            raise MigrationDeclarationError(
                f"m.backfill in {migration!r} was called inside a transaction: its batches must commit one "
                "by one; call it outside db.atomic()"
            )

    # -- queries --------------------------------------------------------------------------------

    def _after(self, last: Any) -> Any:
        return True if last is None else self.key > last

    def _sql(self, query: Any) -> tuple[str, tuple[Any, ...]]:
        sql, params = self.db.get_sql_context().sql(query).query()
        return sql, tuple(params)

    def upper_key(self, last: Any) -> tuple[Any, int]:
        """The key ending the range after ``last`` and the rows in that range; (None, 0) past the end."""
        query = self.source.select(self.key).where(self._after(last)).order_by(self.key)
        row = self.db.execute_sql(*self._sql(query.limit(1).offset(self.spec.batch_size - 1))).fetchone()
        if row is not None:
            return row[0], self.spec.batch_size
        tail = self.source.select(peewee.fn.COUNT(peewee.SQL("*")), peewee.fn.MAX(self.key))
        count, top = self.db.execute_sql(*self._sql(tail.where(self._after(last)))).fetchone()
        return (top, int(count)) if count else (None, 0)

    def update_statement(self, last: Any, upper: Any) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE of the range (``last``, ``upper``], with the caller's ``where``."""
        condition = self._after(last) & (self.key <= upper) if last is not None else self.key <= upper
        if self.spec.where is not None:
            condition = condition & self.spec.where
        query = self.source.update({self.source.c[self.spec.column]: self.spec.value}).where(condition)
        return self._sql(query)

    def remaining(self, last: Any) -> int:
        """Rows with a key after ``last`` (for the estimate of time left)."""
        query = self.source.select(peewee.fn.COUNT(peewee.SQL("*"))).where(self._after(last))
        return int(self.db.execute_sql(*self._sql(query)).fetchone()[0])

    # -- running --------------------------------------------------------------------------------

    def run(self, resume_key: str | None) -> BackfillStats:
        """Every batch after ``resume_key`` (JSON of the last key a killed run committed)."""
        last = decode_key(resume_key)
        self.stats.resumed_after = last
        total = self.remaining(last)
        spec = self.spec
        logger.info(
            "%s: backfill %s.%s in batches of %d by %s: %d row(s) to go%s", self.migration, spec.table,
            spec.column, spec.batch_size, self.key_name, total,
            f", resuming after key {last!r}" if last is not None else "",
        )  # fmt: skip
        started = time.monotonic()
        while True:
            began = time.perf_counter()
            upper, rows = self.upper_key(last)
            self.stats.longest_read_ms = max(self.stats.longest_read_ms, (time.perf_counter() - began) * 1000)
            if upper is None:
                break
            self.batch(last, upper, rows)
            last = upper
            self.stats.seconds = time.monotonic() - started
            self._log_progress(total)
            self._wait()
        self.stats.seconds = time.monotonic() - started
        self.stats.last_key = last
        logger.info(
            "%s: backfill %s.%s done: %d row(s) in %d batch(es), %.1f s (%.0f rows/s), longest batch %.0f ms",
            self.migration, spec.table, spec.column, self.stats.rows, self.stats.batches, self.stats.seconds,
            self.stats.rate, self.stats.longest_batch_ms,
        )  # fmt: skip
        return self.stats

    def batch(self, last: Any, upper: Any, rows: int) -> None:
        """One committed transaction: the range's UPDATE (bounded lock wait) and its progress write."""
        sql, params = self.update_statement(last, upper)
        with self.db.atomic():
            began = time.perf_counter()
            self.schema_migrator.run_step(DDLStep(sql, params, self.spec.table, quiet=True))
            elapsed = (time.perf_counter() - began) * 1000
            if self.on_batch is not None:
                self.on_batch(encode_key(upper))
        self.stats.longest_batch_ms = max(self.stats.longest_batch_ms, elapsed)
        self.stats.rows += rows
        self.stats.batches += 1

    def plan(self) -> int:
        """For a preview: the first batch's statements (captured, not sent); returns the rows to go."""
        upper, _ = self.upper_key(None)
        if upper is not None:
            sql, params = self.update_statement(None, upper)
            self.schema_migrator.run_step(DDLStep(sql, params, self.spec.table, quiet=True))
        return self.remaining(None)

    def _wait(self) -> None:
        wait = self.spec.pause
        if self.spec.throttle is not None:
            wait = max(wait, float(self.spec.throttle()))
        if wait > 0:
            time.sleep(wait)

    def _log_progress(self, total: int) -> None:
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY:
            return
        self._logged_at = now
        stats = self.stats
        left = max(total - stats.rows, 0)
        eta = _duration(left / stats.rate) if stats.rate > 0 else "unknown"
        logger.info(
            "%s: backfill %s.%s: %d of %d row(s) (%.0f%%), %.0f rows/s, about %s left", self.migration,
            self.spec.table, self.spec.column, stats.rows, total, 100.0 * stats.rows / max(total, 1),
            stats.rate, eta,
        )  # fmt: skip
