"""``preview_migration``: what the pending migrations would send, which locks they take, how long.

The pending migrations (by the tracker's read paths; no table is created) run as
``migrate_db`` would run them, same migrator, same transaction shape, with a
:class:`~api.db.preview.capture.StatementCapture` on the database for this thread: reads and
introspection reach the server, every other statement is recorded and not sent. All
of it happens inside one transaction that is always rolled back and, where the
engine has one, is read-only (PostgreSQL ``READ ONLY``, SQLite ``PRAGMA query_only``)
as a net for SQL that bypasses ``execute_sql`` (a raw driver cursor). MySQL/MariaDB
have no such net for DDL (it commits implicitly): there, only the capture stands
between a preview and the server.

Each captured statement is then analysed (:mod:`api.db.preview.analysis`) against the
table's current size from the catalog.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import peewee

from api.db.engines import db_type
from api.db.engines.info import ServerInfo, server_info
from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError
from api.db.migrate.declarations import Migration, MigrationLike, _takes_migrator, plan_migrations
from api.db.migrate.runner import Migrator, _resume_point, make_schema_migrator, using_connection
from api.db.migrate.tracker import HistoryRow, MigrationTracker
from api.db.preview.analysis import (
    BYTES_PER_ROW_GUESS,
    CREATE,
    EXTENSION_TYPES,
    INDEX,
    METADATA,
    OTHER,
    DurationRange,
    StatementEffect,
    analyze_statement,
    estimate_duration,
    extension_types,
    format_bytes,
    pg_binary_coercible,
    pg_type_change,
)
from api.db.preview.capture import CapturedStatement, StatementCapture, strip_statement_settings
from api.db.redact import redact_text

logger = logging.getLogger(__name__)

_SAVEPOINT = "api_db_preview"
_PG_ROWS_PER_PAGE_GUESS = 60  # rows of a narrow table in one 8 kB heap page, for tables never analysed
_SQLITE_REBUILD_SUFFIX = "__tmp__"  # playhouse's SqliteMigrator rebuilds a table through "<table>__tmp__"
_DDL = re.compile(r"^\s*(?:CREATE|ALTER|DROP|RENAME|TRUNCATE)\b", re.IGNORECASE)
_CREATE_EXTENSION = re.compile(r"^\s*CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?", re.IGNORECASE)

# Warning codes.
MISSING_EXTENSION = "missing_extension"
NOT_ATOMIC = "not_atomic"
BLOCKS_LARGE_TABLE = "blocks_large_table"
BREAKS_PREVIOUS_RELEASE = "breaks_previous_release"
INCOMPLETE = "incomplete"
UNANALYSED = "unanalysed"


@dataclass(frozen=True)
class PreviewWarning:
    """Something an operator should know before running the migrations."""

    code: str
    message: str
    migration: str | None = None

    def __str__(self) -> str:
        return f"{self.migration}: {self.message}" if self.migration else self.message

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "migration": self.migration}


@dataclass(frozen=True)
class PlannedStatement:
    """One statement a real run would send, with what it does to its table."""

    migration: str
    sql: str  # exactly as the driver would receive it
    params: tuple[Any, ...]
    table: str | None
    kind: str  # create, metadata, index, scan, rewrite, data, other
    lock: str  # PostgreSQL lock mode, MySQL/MariaDB algorithm (INSTANT/INPLACE/COPY), SQLite's write lock
    blocks_writes: bool
    rewrites_table: bool
    table_rows: int | None  # from the catalog; None when the table does not exist yet
    table_bytes: int | None
    estimate: DurationRange

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "sql": redact_text(self.sql),
            "params": [redact_text(str(p)) for p in self.params],
            "table": self.table,
            "kind": self.kind,
            "lock": self.lock,
            "blocks_writes": self.blocks_writes,
            "rewrites_table": self.rewrites_table,
            "table_rows": self.table_rows,
            "table_bytes": self.table_bytes,
            "estimate": self.estimate.to_dict(),
        }


@dataclass
class MigrationPreview:
    """What applying the pending migrations would do; nothing of it was done."""

    engine: str
    flavour: str
    server_version: str
    pending: list[str] = field(default_factory=list)
    statements: list[PlannedStatement] = field(default_factory=list)
    warnings: list[PreviewWarning] = field(default_factory=list)
    estimated_duration: DurationRange = field(default_factory=lambda: DurationRange(0.0, 0.0, "nothing pending"))

    @property
    def sql_statements(self) -> list[str]:
        """The statements in order, without MariaDB's per-statement lock-wait prefix (``statements[i].sql`` keeps it)."""
        return [strip_statement_settings(s.sql) for s in self.statements]

    @property
    def requires_table_lock(self) -> bool:
        """True when some statement stops writes to a table that exists now."""
        return any(s.blocks_writes and s.table_rows is not None for s in self.statements)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "flavour": self.flavour,
            "server_version": self.server_version,
            "pending": list(self.pending),
            "sql_statements": [redact_text(s) for s in self.sql_statements],
            "requires_table_lock": self.requires_table_lock,
            "estimated_duration": self.estimated_duration.to_dict(),
            "statements": [s.to_dict() for s in self.statements],
            "warnings": [w.to_dict() for w in self.warnings],
        }


# -- running the pending migrations under capture ----------------------------------------


@contextmanager
def _read_only_transaction(db: peewee.Database, engine: str) -> Iterator[None]:
    """A real transaction, invisible to peewee's stack, always rolled back."""
    cursor = db.cursor()
    query_only = None
    if engine == "sqlite":
        query_only = int(cursor.execute("PRAGMA query_only").fetchone()[0])
        cursor.execute("PRAGMA query_only = ON")
    begin = {"sqlite": "BEGIN", "postgres": "BEGIN TRANSACTION READ ONLY"}.get(engine, "START TRANSACTION READ ONLY")
    try:
        cursor.execute(begin)
        try:
            yield
        finally:
            db.cursor().execute("ROLLBACK")
    finally:
        if query_only is not None:
            db.cursor().execute(f"PRAGMA query_only = {query_only}")


def _pending(db: peewee.Database, planned: list[Migration]) -> list[tuple[Migration, HistoryRow | None]]:
    history = MigrationTracker(db).history_by_name()  # a read path: creates nothing
    return [(m, history.get(m.name)) for m in planned if not (m.name in history and history[m.name].is_applied)]


def _run_one(
    db: peewee.Database, engine: str, migration: Migration, row: HistoryRow | None, capture: StatementCapture
) -> str | None:
    """Run ``migration`` under ``capture``; None, or why it could not be previewed to its end."""
    capture.migration = migration.name
    transactional = engine in ("postgres", "sqlite") and migration.atomic
    m = Migrator(
        db,
        make_schema_migrator(db, lock_timeout=migration.lock_timeout, retries=migration.lock_retries),
        migration=migration.name,
        # Like a real run: a failed non-transactional migration resumes after its completed operations.
        resume_after=0 if transactional else _resume_point(row, migration),
    )
    before = len(capture.statements)
    db.execute_sql(f"SAVEPOINT {_SAVEPOINT}")
    try:
        with db.atomic() if transactional else _nothing(), m._unit():
            if _takes_migrator(migration.fn):
                migration.fn(m)
            else:
                migration.fn()
    except Exception as exc:  # a preview reports a failing migration, it does not stop at it
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        info = classify_error(cause, engine)
        db.execute_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        logger.info("preview of %s stopped after %d statement(s): %s: %s", migration.name,
                    len(capture.statements) - before, info.category.value, info.message)
        return f"{type(exc).__name__}: {redact_text(str(exc))}"
    db.execute_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
    return None


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _table_size(db: peewee.Database, engine: str, table: str) -> tuple[int, int] | None:
    """(rows, bytes) of ``table`` from the catalog; None when it does not exist."""
    if engine == "postgres":
        row = db.execute_sql(
            "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid), c.relpages FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')",
            (table,),
        ).fetchone()
        if row is None:
            return None
        rows = int(row[0])
        if rows < 0:  # never analysed (PostgreSQL 14+ says -1): estimate from the heap's pages
            rows = int(row[2]) * _PG_ROWS_PER_PAGE_GUESS
        return max(rows, 0), int(row[1])
    if engine == "mysql":
        row = db.execute_sql(
            "SELECT TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        ).fetchone()
        return None if row is None else (int(row[0] or 0), int(row[1] or 0))
    if table not in db.get_tables():
        return None
    quoted = '"' + table.replace('"', '""') + '"'
    count = int(db.execute_sql(f"SELECT count(*) FROM {quoted}").fetchone()[0])  # SQLite keeps no row count
    try:
        size = db.execute_sql("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()[0]
    except peewee.DatabaseError as exc:  # dbstat is a compile-time option of SQLite
        logger.debug("no dbstat on this SQLite: %s", classify_error(exc, engine).message)
        size = None
    return count, int(size or count * BYTES_PER_ROW_GUESS)


# -- analysis ---------------------------------------------------------------------------


def _check_settings(large_table_rows: int, large_table_bytes: int) -> None:
    for name, value in (("large_table_rows", large_table_rows), ("large_table_bytes", large_table_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")


def preview_migration(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    large_table_rows: int = 100_000,
    large_table_bytes: int = 256 * 1024 * 1024,
) -> MigrationPreview:
    """What ``migrate_db(db, migrations)`` would do now: statements, locks, duration, warnings.

    Only pending migrations are previewed. Nothing in the database changes: writes are
    captured, reads run inside a transaction that is rolled back. A table counts as large
    (warnings about blocking builds and rewrites) from ``large_table_rows`` rows or
    ``large_table_bytes`` bytes.
    """
    _check_settings(large_table_rows, large_table_bytes)
    planned = plan_migrations(migrations)  # raises MigrationDeclarationError before any database work
    if isinstance(db, peewee.DatabaseProxy):
        if db.obj is None:
            raise ConfigurationError("the database proxy is not initialized; call proxy.initialize(db) first")
        db = db.obj  # the capture replaces methods on the database object itself
    engine = db_type(db)
    if not db.is_closed() and db.in_transaction():
        # Our BEGIN would commit the caller's transaction on MySQL and nest oddly elsewhere.
        raise ConfigurationError("preview_migration cannot run inside a transaction: call it outside db.atomic()")
    with using_connection(db):
        info = server_info(db)
        pending_rows = _pending(db, planned)
        pending = [migration for migration, _ in pending_rows]
        preview = MigrationPreview(engine, info.flavour, info.version_string, [m.name for m in pending])
        if not pending:
            return preview
        capture = StatementCapture(db)
        failures: dict[str, str] = {}
        with _read_only_transaction(db, engine), capture.active():
            for migration, row in pending_rows:
                failure = _run_one(db, engine, migration, row, capture)
                if failure is not None:
                    failures[migration.name] = failure
        _analyse(db, preview, info, capture.statements, pending, failures,
                 large_rows=large_table_rows, large_bytes=large_table_bytes)
    for warning in preview.warnings:  # returned to the caller, who decides how loud they are
        logger.info("preview: %s", warning)
    return preview


def _analyse(
    db: peewee.Database,
    preview: MigrationPreview,
    info: ServerInfo,
    captured: list[CapturedStatement],
    pending: list[Migration],
    failures: dict[str, str],
    *,
    large_rows: int,
    large_bytes: int,
) -> None:
    engine = preview.engine
    sizes: dict[str, tuple[int, int] | None] = {}
    created: set[str] = set()
    effects: list[tuple[CapturedStatement, StatementEffect]] = []
    for statement in captured:
        effect = analyze_statement(statement.sql, engine, flavour=info.flavour, version=info.version)
        table = effect.table
        if engine == "postgres" and effect.rewrites_table and table is not None and table not in created:
            effect = _pg_without_rewrite(db, statement.sql, table, effect)
        effects.append((statement, effect))
        if table is not None and table not in sizes:
            sizes[table] = _table_size(db, engine, table)
        known = None if effect.kind == CREATE or table is None or table in created else sizes.get(table)
        rows, size = known if known is not None else (None, None)
        if effect.kind == CREATE and table is not None:
            created.add(table)
        if effect.new_name:
            created.add(effect.new_name)
        preview.statements.append(
            PlannedStatement(
                statement.migration, statement.sql, statement.params, table, effect.kind, effect.lock,
                effect.blocks_writes, effect.rewrites_table, rows, size, estimate_duration(effect.kind, rows, size),
            )
        )
    low = sum(s.estimate.low_seconds for s in preview.statements)
    high = sum(s.estimate.high_seconds for s in preview.statements)
    heavy = [s for s in preview.statements if s.kind not in ("metadata", "create")]
    basis = "; ".join(f"{s.table}: {s.estimate.basis}" for s in heavy) or "catalog changes only"
    preview.estimated_duration = DurationRange(
        low, high, f"{len(preview.statements)} statement(s); {basis}; lock waits not included (each bounded "
        "by the migration's lock_timeout and retries)"
    )
    _warn(preview, info, effects, pending, failures, large_rows, large_bytes)


def _warn(
    preview: MigrationPreview,
    info: ServerInfo,
    effects: list[tuple[CapturedStatement, StatementEffect]],
    pending: list[Migration],
    failures: dict[str, str],
    large_rows: int,
    large_bytes: int,
) -> None:
    add = preview.warnings.append
    engine = preview.engine
    # Extensions: the ones installed now, plus those a statement of this preview creates.
    installed = set(info.extensions)
    for (statement, _), planned in zip(effects, preview.statements):
        created_ext = _CREATE_EXTENSION.match(statement.sql)
        if created_ext:
            installed.add(created_ext.group(1).lower())
        if engine != "postgres":
            continue
        for type_name in extension_types(statement.sql):
            extension, label = EXTENSION_TYPES[type_name]
            if extension in installed:
                continue
            available = info.available_extensions.get(extension)
            how = (f"CREATE EXTENSION {extension} (version {available} is available) before this migration"
                   if available else f"this server does not offer the {extension} extension: install {label} first")
            add(PreviewWarning(MISSING_EXTENSION,
                               f"{label} not installed: column type {type_name} on {planned.table} needs it; {how}",
                               statement.migration))
    if engine == "mysql":
        for migration in pending:
            ddl = [s for s, _ in effects if s.migration == migration.name and _DDL.match(strip_statement_settings(s.sql))]
            if len(ddl) > 1:
                add(PreviewWarning(
                    NOT_ATOMIC,
                    f"{len(ddl)} DDL statements: MySQL/MariaDB commit each on its own, so this migration cannot be "
                    "atomic; a failure leaves the first ones applied (the next boot resumes after them). "
                    "Keep one DDL statement per migration where you can",
                    migration.name,
                ))
    renamed_to: set[str] = {e.new_name for _, e in effects if e.breaking == "rename_table" and e.new_name}
    for (statement, effect), planned in zip(effects, preview.statements):
        large = planned.table_rows is not None and (
            planned.table_rows >= large_rows or (planned.table_bytes or 0) >= large_bytes
        )
        size = f"{planned.table_rows} rows, {format_bytes(planned.table_bytes)}"
        if large and planned.blocks_writes and planned.kind == INDEX:
            advice = ("use m.add_index(..., concurrently=True) in a Migration(..., atomic=False)"
                      if engine == "postgres" else "schedule it when writes can wait")
            add(PreviewWarning(
                BLOCKS_LARGE_TABLE,
                f"index build on {planned.table} ({size}) holds a {planned.lock} lock: writes wait for the whole "
                f"build ({planned.estimate}); {advice}",
                statement.migration,
            ))
        elif large and planned.rewrites_table:
            add(PreviewWarning(
                BLOCKS_LARGE_TABLE,
                f"rewrites {planned.table} ({size}) under {planned.lock}"
                f"{' (writes wait)' if planned.blocks_writes else ''} for about {planned.estimate}: "
                "consider adding a new column and backfilling in batches",
                statement.migration,
            ))
        if effect.breaking and planned.table_rows is not None and not _sqlite_rebuild(effect, renamed_to):
            what = {
                "drop_column": f"drops a column of {planned.table}",
                "drop_table": f"drops table {planned.table}",
                "rename_column": f"renames a column of {planned.table} to {effect.new_name}",
                "rename_table": f"renames table {planned.table} to {effect.new_name}",
            }[effect.breaking]
            add(PreviewWarning(
                BREAKS_PREVIOUS_RELEASE,
                f"{what}: instances still running the previous release use the old name and fail until "
                "replaced; expand first (add the new, deploy code that uses both), contract in a later release",
                statement.migration,
            ))
    for planned in preview.statements:
        if planned.kind == OTHER:
            add(PreviewWarning(
                UNANALYSED,
                f"not analysed, so its lock and duration are unknown (assume the strongest lock): "
                f"{redact_text(' '.join(planned.sql.split()))[:120]}",
                planned.migration,
            ))
    for name, failure in failures.items():
        add(PreviewWarning(
            INCOMPLETE,
            f"could not be previewed to its end ({failure}); statements captured before that point are listed. "
            "A step that depends on an earlier one having run (introspecting a column just added) cannot see "
            "its effect in a preview",
            name,
        ))


def _pg_without_rewrite(db: peewee.Database, sql: str, table: str, effect: StatementEffect) -> StatementEffect:
    """A type change PostgreSQL does in the catalog only (VARCHAR(40) to VARCHAR(200)) does not rewrite."""
    change = pg_type_change(sql)
    if change is None or change[3]:
        return effect
    column, new_type, new_length, _ = change
    row = db.execute_sql(
        "SELECT data_type, character_maximum_length FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()
    if row is None or not pg_binary_coercible(str(row[0]), row[1], new_type, new_length):
        return effect
    return replace(effect, kind=METADATA, rewrites_table=False)


def _sqlite_rebuild(effect: StatementEffect, renamed_to: set[str]) -> bool:
    """playhouse's SQLite table rebuild (copy to <t>__tmp__, drop <t>, rename back): not a breaking drop."""
    table = effect.table or ""
    if effect.breaking == "drop_table":
        return table in renamed_to
    if effect.breaking == "rename_table":
        return table.endswith(_SQLITE_REBUILD_SUFFIX)
    return False
