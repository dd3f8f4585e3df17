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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import peewee

from api.db.engines import Engine, engine_for
from api.db.engines.info import ServerInfo, server_info
from api.db.engines.statements import CREATE, INDEX, METADATA, OTHER, StatementEffect
from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError
from api.db.migrate.declarations import Migration, MigrationLike, _takes_migrator, plan_migrations
from api.db.migrate.runner import Migrator, _resume_point, make_schema_migrator, using_connection
from api.db.migrate.tracker import HistoryRow, MigrationTracker
from api.db.preview.analysis import (
    DurationRange,
    analyze_for,
    estimate_duration,
    extension_types,
    format_bytes,
)
from api.db.preview.capture import CapturedStatement, StatementCapture, strip_statement_settings
from api.db.redact import redact_text
from api.db.tracing import preview_attributes, traced

logger = logging.getLogger(__name__)

_SAVEPOINT = "api_db_preview"
_SQLITE_REBUILD_SUFFIX = "__tmp__"  # playhouse's SqliteMigrator rebuilds a table through "<table>__tmp__"
_DDL = re.compile(r"^\s*(?:CREATE|ALTER|DROP|RENAME|TRUNCATE)\b", re.IGNORECASE)
_CREATE_EXTENSION = re.compile(
    r"^\s*CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)\"?", re.IGNORECASE
)

# Warning codes.
MISSING_EXTENSION = "missing_extension"
NOT_ATOMIC = "not_atomic"
BLOCKS_LARGE_TABLE = "blocks_large_table"
BREAKS_PREVIOUS_RELEASE = "breaks_previous_release"
INCOMPLETE = "incomplete"
BACKFILL = "backfill"
UNANALYSED = "unanalysed"
MISSING_TABLE = "missing_table"
DATA_LOSS = "data_loss"
_DROP = re.compile(r"^\s*(?:DROP\s+TABLE|ALTER\s+TABLE\s+\S+\s+DROP\s+(?:COLUMN\s+)?"
                   r"(?!INDEX|CONSTRAINT|FOREIGN|DEFAULT|NOT|PRIMARY)\S)",
                   re.IGNORECASE)


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
    estimated_duration: DurationRange = field(
        default_factory=lambda: DurationRange(0.0, 0.0, "nothing pending")
    )

    @property
    def sql_statements(self) -> list[str]:
        """The statements in order, without MariaDB's lock-wait prefix (``statements[i].sql`` keeps it)."""
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
def _read_only_transaction(db: peewee.Database, engine: Engine) -> Iterator[None]:
    """A real transaction, invisible to peewee's stack, always rolled back."""
    cursor = db.cursor()
    with engine.read_only_session(cursor):
        cursor.execute(engine.preview_begin)
        try:
            yield
        finally:
            db.cursor().execute("ROLLBACK")


def _pending(db: peewee.Database, planned: list[Migration]) -> list[tuple[Migration, HistoryRow | None]]:
    history = MigrationTracker(db).history_by_name()  # a read path: creates nothing
    return [
        (m, history.get(m.name)) for m in planned if not (m.name in history and history[m.name].is_applied)
    ]


def _run_one(
    db: peewee.Database,
    engine: Engine,
    migration: Migration,
    row: HistoryRow | None,
    capture: StatementCapture,
    backfills: list[tuple[str, tuple[str, str, int, int]]] | None = None,
) -> str | None:
    """Run ``migration`` under ``capture``; None, or why it could not be previewed to its end."""
    capture.migration = migration.name
    transactional = engine.transactional_ddl() and migration.atomic
    m = Migrator(
        db,
        make_schema_migrator(db, lock_timeout=migration.lock_timeout, retries=migration.lock_retries),
        migration=migration.name,
        # Like a real run: a failed non-transactional migration resumes after its completed operations.
        resume_after=0 if transactional else _resume_point(row, migration),
        atomic=migration.atomic,
        planning=True,  # a backfill shows its first batch and is reported below
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
        info = classify_error(cause, engine.name)
        db.execute_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        logger.info("preview of %s stopped after %d statement(s): %s: %s", migration.name,
                    len(capture.statements) - before, info.category.value, info.message)
        return f"{type(exc).__name__}: {redact_text(str(exc))}"
    db.execute_sql(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
    if backfills is not None:
        backfills.extend((migration.name, planned) for planned in m.backfills)
    return None


def _undoing(
    db: peewee.Database, planned: list[Migration], to: str
) -> list[tuple[Migration, HistoryRow | None]]:
    """The undo of each migration a rollback to ``to`` passes through, newest first, as Migration records."""
    from api.db.migrate.rollback import rollback_steps

    history = MigrationTracker(db).history_by_name()
    return [(step.as_migration(), None) for step in rollback_steps(planned, history, to=to, steps=None)]


def _data_loss(statements: list[PlannedStatement]) -> list[PreviewWarning]:
    """Drops in a rollback: the data in those columns and tables is gone for good."""
    return [
        PreviewWarning(DATA_LOSS, f"drops data for good (a later migrate adds it back empty): "
                       f"{redact_text(' '.join(s.sql.split()))[:120]}", s.migration)
        for s in statements if _DROP.match(strip_statement_settings(s.sql))
    ]  # fmt: skip


def migration_sql(db: peewee.Database, migrations: Iterable[MigrationLike], name: str, *,
                  down: bool = False) -> list[str]:  # fmt: skip
    """The SQL of one migration (``down``: of its rollback), captured without changing anything."""
    from api.db.exceptions import MigrationDeclarationError
    from api.db.migrate.rollback import down_for

    planned = plan_migrations(migrations)
    found = [m for m in planned if m.name == name]
    if not found:
        raise MigrationDeclarationError(f"migration {name!r} is not declared; see `python -m api.db status`")
    migration = found[0]
    engine = engine_for(db)
    with using_connection(db):
        if down:
            row = MigrationTracker(db).history_by_name().get(name)
            if row is None or not row.is_applied:
                raise ConfigurationError(f"migration {name!r} is not applied: it has no way back to show")
            migration = down_for(migration, row).as_migration()
        capture = StatementCapture(db)
        with _read_only_transaction(db, engine), capture.active():
            failure = _run_one(db, engine, migration, None, capture)
    if failure is not None:
        logger.info("sql of %s is incomplete: %s", name, failure)
    return [strip_statement_settings(s.sql) for s in capture.statements]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- analysis ---------------------------------------------------------------------------


def _check_settings(large_table_rows: int, large_table_bytes: int) -> None:
    for name, value in (("large_table_rows", large_table_rows), ("large_table_bytes", large_table_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")


@traced("preview_migration", operation="preview", result=preview_attributes)
def preview_migration(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    large_table_rows: int = 100_000,
    large_table_bytes: int = 256 * 1024 * 1024,
    rollback_to: str | None = None,
) -> MigrationPreview:
    """What ``migrate_db(db, migrations)`` would do now: statements, locks, duration, warnings.

    ``rollback_to``: preview ``rollback_db(db, migrations, to=rollback_to)`` instead (newest first).

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
    engine = engine_for(db)
    if not db.is_closed() and db.in_transaction():
        # Our BEGIN would commit the caller's transaction on MySQL and nest oddly elsewhere.
        raise ConfigurationError(
            "preview_migration cannot run inside a transaction: call it outside db.atomic()"
        )
    with using_connection(db):
        info = server_info(db)
        pending_rows = _pending(db, planned) if rollback_to is None else _undoing(db, planned, rollback_to)
        pending = [migration for migration, _ in pending_rows]
        preview = MigrationPreview(engine.name, info.flavour, info.version_string, [m.name for m in pending])
        if not pending:
            return preview
        capture = StatementCapture(db)
        failures: dict[str, str] = {}
        backfills: list[tuple[str, tuple[str, str, int, int]]] = []
        with _read_only_transaction(db, engine), capture.active():
            for migration, row in pending_rows:
                failure = _run_one(db, engine, migration, row, capture, backfills)
                if failure is not None:
                    failures[migration.name] = failure
        effects = _plan(engine, preview, info, capture.statements)
        preview.warnings.extend(_data_loss(preview.statements) if rollback_to is not None else [])
        preview.warnings.extend(_warn(_Review(engine, info, effects, preview.statements, pending, failures,
                                              large_table_rows, large_table_bytes, backfills)))
    for warning in preview.warnings:  # returned to the caller, who decides how loud they are
        logger.info("preview: %s", warning)
    return preview


def _plan(
    engine: Engine, preview: MigrationPreview, info: ServerInfo, captured: list[CapturedStatement]
) -> list[tuple[CapturedStatement, StatementEffect]]:
    """Analyse each captured statement against its table's size now; fill in the preview's statements."""
    sizes: dict[str, tuple[int, int] | None] = {}
    created: set[str] = set()  # tables this preview creates or renames to: empty, whatever the catalog says
    effects: list[tuple[CapturedStatement, StatementEffect]] = []
    for statement in captured:
        effect = _effect(engine, info, statement, created)
        table = effect.table
        if table is not None and table not in sizes:
            sizes[table] = engine.table_size(table)
        known = None if effect.kind == CREATE or table is None or table in created else sizes.get(table)
        rows, size = known if known is not None else (None, None)
        created.update(_created_by(effect))
        effects.append((statement, effect))
        preview.statements.append(
            PlannedStatement(
                statement.migration, statement.sql, statement.params, table, effect.kind, effect.lock,
                effect.blocks_writes, effect.rewrites_table, rows, size,
                estimate_duration(effect.kind, rows, size),
            )
        )
    preview.estimated_duration = _total(preview.statements)
    return effects


def _effect(
    engine: Engine, info: ServerInfo, statement: CapturedStatement, created: set[str]
) -> StatementEffect:
    """The statement's effect; a rewrite the catalog shows to be a catalog change is one."""
    effect = analyze_for(type(engine), statement.sql, flavour=info.flavour, version=info.version)
    table = effect.table
    if not effect.rewrites_table or table is None or table in created:
        return effect
    if engine.rewrites_table(strip_statement_settings(statement.sql), table):
        return effect
    return replace(effect, kind=METADATA, rewrites_table=False)


def _created_by(effect: StatementEffect) -> set[str]:
    """The tables a statement creates (or renames to)."""
    names = {effect.table} if effect.kind == CREATE and effect.table is not None else set()
    return names | ({effect.new_name} if effect.new_name else set())


def _total(statements: list[PlannedStatement]) -> DurationRange:
    """The whole run's duration: the sum of the statements'."""
    low = sum(s.estimate.low_seconds for s in statements)
    high = sum(s.estimate.high_seconds for s in statements)
    heavy = [s for s in statements if s.kind not in ("metadata", "create")]
    basis = "; ".join(f"{s.table}: {s.estimate.basis}" for s in heavy) or "catalog changes only"
    return DurationRange(
        low, high, f"{len(statements)} statement(s); {basis}; lock waits not included (each bounded "
        "by the migration's lock_timeout and retries)"
    )


# -- warnings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Review:
    """What the warning checks look at."""

    engine: Engine
    info: ServerInfo
    effects: list[tuple[CapturedStatement, StatementEffect]]
    planned: list[PlannedStatement]  # one per effect, in the same order
    pending: list[Migration]
    failures: dict[str, str]
    large_rows: int
    large_bytes: int
    backfills: list[tuple[str, tuple[str, str, int, int]]] = field(default_factory=list)  # (migration, plan)

    def is_large(self, planned: PlannedStatement) -> bool:
        return planned.table_rows is not None and (
            planned.table_rows >= self.large_rows or (planned.table_bytes or 0) >= self.large_bytes
        )


def _missing_extensions(review: _Review) -> list[PreviewWarning]:
    """Column types whose extension is neither installed nor created earlier in the preview."""
    types = review.engine.column_type_extensions
    if not types:
        return []
    warnings: list[PreviewWarning] = []
    installed = set(review.info.extensions)
    for (statement, _), planned in zip(review.effects, review.planned):
        created_ext = _CREATE_EXTENSION.match(statement.sql)
        if created_ext:
            installed.add(created_ext.group(1).lower())
        for type_name in extension_types(statement.sql):
            extension, label = types[type_name]
            if extension not in installed:
                warnings.append(_missing_extension(review.info, planned, type_name, extension, label))
    return warnings


def _missing_extension(
    info: ServerInfo, planned: PlannedStatement, type_name: str, extension: str, label: str
) -> PreviewWarning:
    available = info.available_extensions.get(extension)
    how = (f"CREATE EXTENSION {extension} (version {available} is available) before this migration"
           if available else f"this server does not offer the {extension} extension: install {label} first")
    return PreviewWarning(
        MISSING_EXTENSION,
        f"{label} not installed: column type {type_name} on {planned.table} needs it; {how}",
        planned.migration,
    )


def _not_atomic(review: _Review) -> list[PreviewWarning]:
    """Migrations with several DDL statements on an engine that commits each on its own."""
    if review.engine.transactional_ddl():
        return []
    warnings: list[PreviewWarning] = []
    for migration in review.pending:
        ddl = [s for s, _ in review.effects
               if s.migration == migration.name and _DDL.match(strip_statement_settings(s.sql))]
        if len(ddl) > 1:
            warnings.append(_not_atomic_warning(migration.name, len(ddl)))
    return warnings


def _not_atomic_warning(migration: str, count: int) -> PreviewWarning:
    return PreviewWarning(
        NOT_ATOMIC,
        f"{count} DDL statements: MySQL/MariaDB commit each on its own, so this migration cannot be "
        "atomic; a failure leaves the first ones applied (the next boot resumes after them). "
        "Keep one DDL statement per migration where you can",
        migration,
    )


def _backfills(review: _Review) -> list[PreviewWarning]:
    """Each ``m.backfill``: its batches commit one by one, outside any transaction."""
    warnings: list[PreviewWarning] = []
    for migration, (table, column, rows, batch_size) in review.backfills:
        batches = -(-rows // batch_size)
        warnings.append(PreviewWarning(
            BACKFILL,
            f"backfill of {table}.{column}: {rows} row(s) in {batches} batch(es) of {batch_size} (the first "
            "shown), each committed on its own: this step is not atomic, the migration is non-transactional "
            "(atomic=False); a failure leaves the batches done applied and the next boot resumes after the "
            "last one. Release N must already write the column for new rows",
            migration,
        ))  # fmt: skip
    return warnings


def _per_statement(review: _Review) -> list[PreviewWarning]:
    """Statement by statement: blocking a large table, then breaking the previous release."""
    renamed_to = {e.new_name for _, e in review.effects if e.breaking == "rename_table" and e.new_name}
    warnings: list[PreviewWarning] = []
    made: set[str] = set()  # tables an earlier statement of the plan creates or renames into place
    for (_, effect), planned in zip(review.effects, review.planned):
        found = (_missing_table(effect, planned, made), _blocks_large_table(review, planned),
                 _breaks_previous_release(effect, planned, renamed_to))  # fmt: skip
        warnings.extend(warning for warning in found if warning is not None)
        if effect.new_name:
            made.add(effect.new_name)
        if planned.table and planned.kind == CREATE:
            made.add(planned.table)
    return warnings


def _missing_table(
    effect: StatementEffect, planned: PlannedStatement, made: set[str]
) -> PreviewWarning | None:
    """A statement on a table that does not exist and that no earlier statement of the plan creates."""
    if (
        planned.table is None
        or planned.table_rows is not None
        or planned.kind == CREATE
        or planned.table in made
    ):
        return None
    return PreviewWarning(
        MISSING_TABLE,
        f"{planned.table} does not exist and no earlier migration creates it: the real run fails here "
        "(missing_table); create the table first, or fix the table name",
        planned.migration,
    )


def _blocks_large_table(review: _Review, planned: PlannedStatement) -> PreviewWarning | None:
    """An index build that stops writes, or a rewrite, on a large table."""
    if not review.is_large(planned):
        return None
    size = f"{planned.table_rows} rows, {format_bytes(planned.table_bytes)}"
    if planned.blocks_writes and planned.kind == INDEX:
        return PreviewWarning(
            BLOCKS_LARGE_TABLE,
            f"index build on {planned.table} ({size}) holds a {planned.lock} lock: writes wait for the whole "
            f"build ({planned.estimate}); {review.engine.index_build_advice}",
            planned.migration,
        )
    if planned.rewrites_table:
        return PreviewWarning(
            BLOCKS_LARGE_TABLE,
            f"rewrites {planned.table} ({size}) under {planned.lock}"
            f"{' (writes wait)' if planned.blocks_writes else ''} for about {planned.estimate}: "
            "consider adding a new column and backfilling in batches",
            planned.migration,
        )
    return None


_BREAKING_WHAT: dict[str, str] = {
    "drop_column": "drops a column of {table}",
    "drop_table": "drops table {table}",
    "rename_column": "renames a column of {table} to {new}",
    "rename_table": "renames table {table} to {new}",
}


def _breaks_previous_release(
    effect: StatementEffect, planned: PlannedStatement, renamed_to: set[str]
) -> PreviewWarning | None:
    """A drop or a rename of something that exists now, which the running release still uses."""
    if not effect.breaking or planned.table_rows is None or _sqlite_rebuild(effect, renamed_to):
        return None
    what = _BREAKING_WHAT[effect.breaking].format(table=planned.table, new=effect.new_name)
    return PreviewWarning(
        BREAKS_PREVIOUS_RELEASE,
        f"{what}: instances still running the previous release use the old name and fail until "
        "replaced; expand first (add the new, deploy code that uses both), contract in a later release",
        planned.migration,
    )


def _unanalysed(review: _Review) -> list[PreviewWarning]:
    """Statements the analysis does not know."""
    return [
        PreviewWarning(
            UNANALYSED,
            f"not analysed, so its lock and duration are unknown (assume the strongest lock): "
            f"{redact_text(' '.join(planned.sql.split()))[:120]}",
            planned.migration,
        )
        for planned in review.planned
        if planned.kind == OTHER
    ]


def _incomplete(review: _Review) -> list[PreviewWarning]:
    """Migrations that failed part-way through the preview."""
    return [
        PreviewWarning(
            INCOMPLETE,
            f"could not be previewed to its end ({failure}); "
            "statements captured before that point are listed. "
            "A step that depends on an earlier one having run (introspecting a column just added) cannot see "
            "its effect in a preview",
            name,
        )
        for name, failure in review.failures.items()
    ]


# The checks, in the order their warnings are reported.
_CHECKS: tuple[Callable[[_Review], list[PreviewWarning]], ...] = (
    _missing_extensions, _not_atomic, _backfills, _per_statement, _unanalysed, _incomplete,
)


def _warn(review: _Review) -> list[PreviewWarning]:
    """Every check's warnings, in order."""
    return [warning for check in _CHECKS for warning in check(review)]


def _sqlite_rebuild(effect: StatementEffect, renamed_to: set[str]) -> bool:
    """playhouse's SQLite table rebuild (copy to <t>__tmp__, drop <t>, rename back): not a breaking drop."""
    table = effect.table or ""
    if effect.breaking == "drop_table":
        return table in renamed_to
    if effect.breaking == "rename_table":
        return table.endswith(_SQLITE_REBUILD_SUFFIX)
    return False
