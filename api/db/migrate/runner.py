"""Named migrations and ``migrate_db``: apply each declared migration exactly once, at boot.

The flow of :func:`migrate_db`:

1. Validate the whole list (names, callables) before touching the database.
2. Fast path: one query compares a digest of the declared names
   with the digests recorded after earlier complete runs. Nothing pending: done,
   without the lock.
3. Otherwise take the migration lock (:mod:`api.db.migrate.lock`), read the history again
   under it, and apply what is pending:

   * PostgreSQL and SQLite (transactional DDL): all pending migrations and their
     history rows in one transaction (``atomic="all"``) or one per migration
     (``atomic="each"``); each operation inside a SAVEPOINT so that an expected
     "already there" error does not abort the transaction.
   * MySQL/MariaDB (no transactional DDL), and any ``Migration(atomic=False)``:
     a ``running`` row, then the operations one by one (progress written after
     each), then ``success``. A failure leaves a ``failed`` row listing what
     completed; the next run resumes after the completed operations.

Declarations live in :mod:`api.db.migrate.declarations`, checksums in :mod:`api.db.migrate.checksums`,
the read paths (status, validate, repair) in :mod:`api.db.migrate.status`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee
from playhouse.migrate import Operation, SchemaMigrator

from api.db.engines import db_type
from api.db.error_handler import ErrorInfo, already_applied, classify_error
from api.db.exceptions import (
    ConfigurationError,
    MigrationError,
    UnsupportedCapability,
)
from api.db.migrate.declarations import (
    Migration,
    MigrationLike,
    _quick_names,
    _takes_migrator,
    migrations_digest,
    plan_migrations,
)
from api.db.migrate.lock import migration_lock
from api.db.migrate.tracker import (
    APPLIED,
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCESS,
    HistoryRow,
    MigrationTracker,
)
from api.db.redact import redact_text
from api.db.schema.ddl import safe_schema_migrator
from api.db.schema.fields import validate_models
from api.db.schema.verify import verify_schema

logger = logging.getLogger(__name__)

ATOMIC_MODES = ("all", "each")
ON_UNKNOWN_MODES = ("warn", "error")
TRANSACTIONAL_DDL = frozenset({"postgres", "sqlite"})
PYFORMAT_ENGINES = frozenset({"postgres", "mysql"})  # drivers whose placeholder is %s
_PROGRESS = re.compile(r"completed operations \((\d+)\)")
# Transaction control and the lock-bound settings the lock-safe migrator wraps around DDL.
_CONTROL_SQL = re.compile(
    r"^\s*(?:SAVEPOINT|RELEASE|ROLLBACK|BEGIN|COMMIT|SET\s+(?:LOCAL|SESSION)?\s*(?:lock_timeout|lock_wait_timeout)"
    r"|RESET\s+lock_timeout|PRAGMA\s+busy_timeout)\b",
    re.IGNORECASE,
)


# -- the migrator m -----------------------------------------------------------------


def make_schema_migrator(
    db: peewee.Database, *, lock_timeout: float | None = None, retries: int | None = None
) -> SchemaMigrator:
    """The schema migrator every migration's DDL goes through: playhouse.migrate's, made lock-safe.

    ``lock_timeout`` / ``retries``: a migration's own bound on lock waits (None: the defaults).
    """
    options: dict[str, Any] = {}
    if lock_timeout is not None:
        options["lock_timeout"] = lock_timeout
    if retries is not None:
        options["retries"] = retries
    return safe_schema_migrator(db, **options)


class _StatementLog:
    """The SQL this thread runs on ``db`` while active, and the statement that raised (for error reports).

    Built on peewee's ``Database.query_hooks``: each hook call carries the SQL and, for
    the statement that failed, its exception, so the failing statement is known exactly
    even when the lock-safe migrator sends settings (``SET LOCAL lock_timeout``,
    ``PRAGMA busy_timeout``) around it. Hooks see every thread: only this one is kept.
    """

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.failed: str | None = None

    @contextlib.contextmanager
    def capture(self, db: peewee.Database) -> Iterator[None]:
        thread = threading.get_ident()

        def hook(event: Any) -> None:
            if threading.get_ident() != thread or _CONTROL_SQL.match(event.sql):
                return
            self.statements.append(event.sql)
            if event.exception is not None:
                self.failed = event.sql

        self.failed = None
        db.query_hooks.append(hook)
        try:
            yield
        finally:
            db.query_hooks.remove(hook)

    @property
    def last(self) -> str | None:
        """The statement that raised, else the last one run."""
        if self.failed is not None:
            return self.failed
        return self.statements[-1] if self.statements else None


class _OperationFailed(Exception):
    """Internal: an operation failed unexpectedly; carries what MigrationError will say."""

    def __init__(self, operation: str, info: ErrorInfo, statement: str | None) -> None:
        super().__init__(f"{operation}: {info.category.value}: {info.message}")
        self.operation = operation
        self.info = info
        self.statement = statement


def describe_operation(name: str, args: Sequence[Any], kwargs: dict[str, Any] | None = None) -> str:
    """``add_column('file', 'source_type', CharField)``: short, no values that could be secrets."""
    shown: list[str] = []
    for arg in args:
        if isinstance(arg, str):
            text = redact_text(arg)
            shown.append(repr(text if len(text) <= 60 else text[:57] + "..."))
        elif isinstance(arg, (int, float, bool)) or arg is None:
            shown.append(repr(arg))
        elif isinstance(arg, (list, tuple)) and all(isinstance(a, str) for a in arg):
            shown.append(repr(tuple(arg)))
        else:
            shown.append(type(arg).__name__ if not isinstance(arg, type) else arg.__name__)
    return f"{name}({', '.join(shown)})"


class Migrator:
    """The ``m`` a migration function receives: schema operations that run immediately.

    Every operation of ``playhouse.migrate.SchemaMigrator`` (``add_column``,
    ``drop_column``, ``rename_column``, ``add_index``...) is available by name;
    plus :meth:`sql`, :meth:`create_tables` and :attr:`db`. An operation whose
    error proves its work already done (a duplicate column on ``add_column``...)
    is logged and counted as done.
    """

    def __init__(
        self,
        db: peewee.Database,
        schema_migrator: SchemaMigrator,
        *,
        migration: str = "",
        resume_after: int = 0,
        on_progress: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._db = db
        self.schema_migrator = schema_migrator
        self.engine = db_type(db)
        self.migration = migration
        self.resume_after = resume_after
        self.on_progress = on_progress
        self.completed: list[str] = []  # descriptions, in order, of operations now in effect
        self.executed = 0  # operations that changed something in this run
        self.already = 0  # operations found done (adoption, resumption)
        self.log = _StatementLog()

    @property
    def db(self) -> peewee.Database:
        return self._db

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        target = getattr(self.schema_migrator, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            if isinstance(result, Operation):
                return self.run_operation(name, args, kwargs, result)
            return result

        call.__name__ = name
        return call

    def sql(self, statement: str, params: Sequence[Any] | None = None) -> None:
        """Run one SQL statement as a migration operation; ``%`` is literal unless ``params`` are given."""
        sent = statement
        if params is None and self.engine in PYFORMAT_ENGINES:
            # peewee always passes a params tuple (``params or ()``), and psycopg2 / PyMySQL
            # then read every % as a placeholder: '100%' would fail with "tuple index out of range".
            sent = statement.replace("%", "%%")
        self.run_operation("sql", (statement,), {}, self.schema_migrator.sql(sent, params))

    def create_tables(self, *models: type[peewee.Model], safe: bool = True) -> None:
        """Create the tables (and indexes) of ``models`` on this database; existing ones are left alone."""

        validate_models(models, self._db)  # logs fields that will not work as written on this engine

        def create() -> None:
            with self._db.bind_ctx(models):
                self._db.create_tables(models, safe=safe)

        self._run("create_tables", tuple(m.__name__ for m in models), create, None)

    def run_operation(self, name: str, args: Sequence[Any], kwargs: dict[str, Any], operation: Operation) -> None:
        """Run ``operation`` now, through the schema migrator, with the already-applied rules."""
        self._run(name, args, lambda: self.schema_migrator.migrate(operation), kwargs)

    def _run(self, name: str, args: Sequence[Any], action: Callable[[], Any], kwargs: dict[str, Any] | None) -> None:
        description = describe_operation(name, args, kwargs)
        index = len(self.completed)
        if index < self.resume_after:
            logger.info("%s: %s completed in an earlier run, not repeated", self.migration, description)
            self.completed.append(description)
            self.already += 1
            self._progress()
            return
        first_statement = len(self.log.statements)
        try:
            with self.log.capture(self._db), self._unit():
                action()
        except UnsupportedCapability:
            raise
        except Exception as exc:  # every failure is classified here; unexpected ones become _OperationFailed
            statements = self.log.statements[first_statement:]
            statement = self.log.failed or (statements[-1] if statements else None)
            if self._already_applied(exc, name, args, statement):
                info = classify_error(exc, self.engine, statement)
                logger.info(
                    "%s: %s already done (%s: %s), counted as applied",
                    self.migration,
                    description,
                    info.category.value,
                    info.message,
                )
                self.completed.append(description)
                self.already += 1
                self._progress()
                return
            info = classify_error(exc, self.engine, statement)
            raise _OperationFailed(description, info, statement) from exc
        self.completed.append(description)
        self.executed += 1
        logger.debug("%s: %s done", self.migration, description)
        self._progress()

    def _already_applied(self, exc: BaseException, name: str, args: Sequence[Any], statement: str | None) -> bool:
        table = args[0] if args and isinstance(args[0], str) else None
        if name == "rename_column" and len(args) >= 3:
            return already_applied(
                exc, name, db=self._db, db_type=self.engine, table=table, old_name=args[1], new_name=args[2]
            )
        if name == "rename_table" and len(args) >= 2:
            return already_applied(exc, name, db=self._db, db_type=self.engine, old_name=args[0], new_name=args[1])
        if name == "sql":
            return already_applied(exc, name, db_type=self.engine, statement=str(args[0]) if args else statement)
        return already_applied(exc, name, db_type=self.engine, table=table, statement=statement)

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        # Inside a transaction each operation gets a SAVEPOINT: on PostgreSQL an error
        # would otherwise abort the whole transaction ("current transaction is aborted").
        if self._db.in_transaction():
            with self._db.savepoint():
                yield
        else:
            yield

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.completed)


# -- reports ------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationOutcome:
    """How one migration ended in this run."""

    name: str
    status: str  # success, skipped, failed
    duration_ms: float
    reason: str | None = None
    operations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "reason": self.reason,
            "operations": list(self.operations),
        }


@dataclass
class MigrationReport:
    """What ``migrate_db`` found and did."""

    engine: str
    declared: int
    pending_before: list[str] = field(default_factory=list)
    outcomes: list[MigrationOutcome] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    schema_differences: list[str] = field(default_factory=list)
    fast_path: bool = False  # answered "nothing pending" without taking the lock
    duration_ms: float = 0.0

    def _names(self, status: str) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]

    @property
    def applied(self) -> list[str]:
        return self._names(SUCCESS)

    @property
    def skipped(self) -> list[str]:
        return self._names(SKIPPED)

    @property
    def failed(self) -> list[str]:
        return self._names(FAILED)

    @property
    def up_to_date(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (
            f"{self.engine}: {self.declared} declared, {len(self.pending_before)} pending, "
            f"{len(self.applied)} applied, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"in {self.duration_ms:.1f} ms"
        )
        if self.fast_path:
            text += " (nothing pending, no lock taken)"
        if self.unknown:
            text += f"; {len(self.unknown)} recorded migration(s) not declared: {', '.join(self.unknown)}"
        if self.drift:
            text += f"; changed since applied: {', '.join(self.drift)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "declared": self.declared,
            "pending_before": list(self.pending_before),
            "applied": self.applied,
            "skipped": self.skipped,
            "failed": self.failed,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "unknown": list(self.unknown),
            "drift": list(self.drift),
            "schema_differences": list(self.schema_differences),
            "fast_path": self.fast_path,
            "duration_ms": round(self.duration_ms, 3),
        }


# -- migrate_db -----------------------------------------------------------------------


def _check_settings(lock_timeout: float, atomic: str, on_unknown: str) -> None:
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout > 0:
        raise ConfigurationError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
    if atomic not in ATOMIC_MODES:
        raise ConfigurationError(f"atomic must be one of {', '.join(map(repr, ATOMIC_MODES))}, got {atomic!r}")
    if on_unknown not in ON_UNKNOWN_MODES:
        raise ConfigurationError(
            f"on_unknown must be one of {', '.join(map(repr, ON_UNKNOWN_MODES))}, got {on_unknown!r}"
        )


@contextlib.contextmanager
def using_connection(db: peewee.Database) -> Iterator[None]:
    """Use this thread's connection for the whole run; return it to the pool only if opened here."""
    opened_here = db.is_closed()
    if opened_here:
        db.connect()
    try:
        yield
    finally:
        if opened_here and not db.is_closed():
            db.close()


def _progress_text(completed: Sequence[str]) -> str:
    return f"completed operations ({len(completed)}): " + (" | ".join(completed) if completed else "none")


def _resume_point(row: HistoryRow | None, migration: Migration) -> int:
    if row is None or row.status not in (RUNNING, FAILED) or not row.error_message:
        return 0
    if row.checksum and row.checksum != migration.checksum:
        logger.warning(
            "migration %s changed since its interrupted run; replaying all of its operations", migration.name
        )
        return 0
    match = _PROGRESS.search(row.error_message)
    return int(match.group(1)) if match else 0


class _Run:
    """One locked pass over the pending migrations (state shared by the steps below)."""

    def __init__(self, db: peewee.Database, tracker: MigrationTracker, report: MigrationReport) -> None:
        self.db = db
        self.engine = tracker.db_type
        self.tracker = tracker
        self.report = report

    def call(self, migration: Migration, m: Migrator) -> None:
        if _takes_migrator(migration.fn):
            migration.fn(m)
        else:
            migration.fn()

    def apply(self, migration: Migration, resume_after: int = 0, progress: bool = False) -> MigrationOutcome:
        """Run one migration's function; return its outcome or raise _OperationFailed."""
        on_progress = None
        if progress:

            def on_progress(completed: list[str]) -> None:
                self.tracker.update_progress(migration.name, _progress_text(completed))

        m = Migrator(
            self.db,
            make_schema_migrator(self.db, lock_timeout=migration.lock_timeout, retries=migration.lock_retries),
            migration=migration.name,
            resume_after=resume_after,
            on_progress=on_progress,
        )
        started = time.perf_counter()
        try:
            with m._unit():  # a capability skip rolls back what the migration did, where the engine can
                try:
                    self.call(migration, m)
                except (_OperationFailed, UnsupportedCapability):
                    raise
                except Exception as exc:  # the function itself failed: classify like an operation
                    info = classify_error(exc, self.engine)
                    raise _OperationFailed("the migration function", info, m.log.last) from exc
        except UnsupportedCapability as exc:
            duration = (time.perf_counter() - started) * 1000
            logger.info("migration %s skipped in %.1f ms: %s", migration.name, duration, exc)
            return MigrationOutcome(migration.name, SKIPPED, duration, str(exc), tuple(m.completed))
        except _OperationFailed as failure:
            failure.completed = tuple(m.completed)  # type: ignore[attr-defined]
            failure.duration_ms = (time.perf_counter() - started) * 1000  # type: ignore[attr-defined]
            raise
        duration = (time.perf_counter() - started) * 1000
        if m.already and not m.executed and m.resume_after == 0:
            status, reason = SKIPPED, "every operation was already in effect (adopted)"
        else:
            status, reason = SUCCESS, None
        logger.info(
            "migration %s %s in %.1f ms (%d operation(s))",
            migration.name,
            "applied" if status == SUCCESS else "skipped, already in effect",
            duration,
            len(m.completed),
        )
        return MigrationOutcome(migration.name, status, duration, reason, tuple(m.completed))

    def record(self, migration: Migration, outcome: MigrationOutcome) -> None:
        self.tracker.record_migration(
            migration.name, outcome.status, outcome.reason, outcome.duration_ms, checksum=migration.checksum
        )
        self.report.outcomes.append(outcome)

    def fail(self, migration: Migration, failure: _OperationFailed, *, rolled_back: bool) -> MigrationError:
        info = failure.info
        completed: tuple[str, ...] = () if rolled_back else getattr(failure, "completed", ())
        duration = float(getattr(failure, "duration_ms", 0.0))
        statement = redact_text(failure.statement) if failure.statement else None
        text = f"{info.category.value}: {info.message}; operation: {failure.operation}"
        if statement:
            text += f"; statement: {statement}"
        stored = text if rolled_back else f"{text}\n{_progress_text(completed)}"
        try:
            if rolled_back:
                with self.db.atomic():
                    self.tracker.record_migration(
                        migration.name, FAILED, stored, duration, checksum=migration.checksum
                    )
            else:
                self.tracker.record_migration(migration.name, FAILED, stored, duration, checksum=migration.checksum)
        except peewee.DatabaseError as exc:  # the connection may be gone: the error below still says everything
            logger.error(
                "could not record migration %s as failed: %s", migration.name, classify_error(exc, self.engine).message
            )
        self.report.outcomes.append(MigrationOutcome(migration.name, FAILED, duration, text, completed))
        logger.error(
            "migration %s failed after %.1f ms (%s, code %s): %s; operation %s; statement: %s",
            migration.name,
            duration,
            info.category.value,
            info.code,
            info.message,
            failure.operation,
            statement or "n/a",
        )
        if rolled_back:
            advice = "nothing of it was applied (rolled back); fix it and boot again"
        else:
            why = (
                "MySQL/MariaDB cannot roll back DDL"
                if self.engine == "mysql"
                else "it runs outside a transaction (atomic=False)"
            )
            left = ", ".join(completed) if completed else "no operation"
            advice = (
                f"{why}: {len(completed)} operation(s) stay applied ({left}); fix the cause and boot again, "
                "the next migrate_db() resumes after them (or see `python -m api.db repair`)"
            )
            logger.warning("migration %s failed and was not rolled back: %s", migration.name, advice)
        return MigrationError(
            f"migration {migration.name!r} failed: {text}; {advice}",
            migration=migration.name,
            category=info.category.value,
            statement=statement,
            completed=completed,
            orig=info.orig,
        )

    def run_transactional(self, group: Sequence[Migration]) -> None:
        """Apply ``group`` in one transaction with its history rows; all or nothing."""
        current: Migration | None = None
        done: list[MigrationOutcome] = []
        try:
            with self.db.atomic():
                for migration in group:
                    current = migration
                    outcome = self.apply(migration)
                    self.tracker.record_migration(
                        migration.name, outcome.status, outcome.reason, outcome.duration_ms, checksum=migration.checksum
                    )
                    done.append(outcome)
        except _OperationFailed as failure:
            assert current is not None
            if done:
                logger.error(
                    "rolled back %d migration(s) applied earlier in the same transaction: %s",
                    len(done),
                    ", ".join(o.name for o in done),
                )
            raise self.fail(current, failure, rolled_back=True) from failure.info.orig
        self.report.outcomes.extend(done)

    def run_non_transactional(self, migration: Migration, row: HistoryRow | None) -> None:
        """running row, operations (progress after each), then success; resumable after a failure."""
        resume_after = _resume_point(row, migration)
        if row is not None and row.status in (RUNNING, FAILED):
            logger.warning(
                "resuming migration %s, left %s by %s at %s; %d operation(s) completed then",
                migration.name,
                row.status,
                row.installed_by,
                row.applied_at,
                resume_after,
            )
        self.tracker.record_migration(migration.name, RUNNING, _progress_text([]), checksum=migration.checksum)
        try:
            outcome = self.apply(migration, resume_after=resume_after, progress=True)
        except _OperationFailed as failure:
            raise self.fail(migration, failure, rolled_back=False) from failure.info.orig
        self.record(migration, outcome)


def _groups(pending: Sequence[Migration], atomic: str) -> list[list[Migration]]:
    """Transactional engines: consecutive atomic migrations share a transaction under ``atomic="all"``."""
    groups: list[list[Migration]] = []
    for migration in pending:
        joinable = atomic == "all" and migration.atomic and groups and groups[-1][-1].atomic
        if joinable:
            groups[-1].append(migration)
        else:
            groups.append([migration])
    return groups


def verify_models(db: peewee.Database, models: Sequence[type[peewee.Model]]) -> list[str]:
    """The differences between ``models`` and ``db`` that may break the application (``migrate_db(verify=...)``)."""
    return [str(d) for d in verify_schema(db, models).differences if d.severity == "error"]


def migrate_db(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    lock_timeout: float = 300.0,
    atomic: str = "all",
    on_unknown: str = "warn",
    verify: Sequence[type[peewee.Model]] | None = None,
) -> MigrationReport:
    """Apply every pending migration of ``migrations`` to ``db`` exactly once; return what happened.

    ``lock_timeout``: seconds to wait for another instance's run. ``atomic``: ``"all"``
    (one transaction for all pending migrations, on engines with transactional DDL) or
    ``"each"`` (one per migration). ``on_unknown``: ``"warn"`` or ``"error"`` when the
    history names migrations the code does not declare. ``verify``: models whose tables
    and columns must exist afterwards (differences logged and reported).

    Raises :class:`MigrationDeclarationError` (nothing touched), :class:`MigrationLockTimeout`,
    or :class:`MigrationError` naming the migration, the error category and the statement.
    """
    started = time.perf_counter()
    _check_settings(lock_timeout, atomic, on_unknown)
    if isinstance(migrations, (str, bytes, dict)) or not isinstance(migrations, Iterable):
        plan_migrations(migrations)  # raises the explanatory error
    items = list(migrations)
    names = _quick_names(items)
    if names is None:
        names = [m.name for m in plan_migrations(items)]  # raises MigrationDeclarationError
    tracker = MigrationTracker(db)
    report = MigrationReport(engine=tracker.db_type, declared=len(names))
    digest = migrations_digest(names)
    try:
        with using_connection(db):
            if tracker.is_up_to_date(digest, len(names)):
                report.fast_path = True
                logger.debug("no pending migration (%d declared, digest %s)", len(names), digest[:12])
            else:
                planned = plan_migrations(items)
                with migration_lock(db, timeout=lock_timeout):
                    _migrate_locked(db, tracker, planned, digest, report, atomic=atomic, on_unknown=on_unknown)
            if verify is not None:
                report.schema_differences = verify_models(db, verify)  # each logged by verify_schema
    finally:
        report.duration_ms = (time.perf_counter() - started) * 1000
    if report.pending_before:
        logger.info("%s", report.summary())
    return report


def _migrate_locked(
    db: peewee.Database,
    tracker: MigrationTracker,
    planned: Sequence[Migration],
    digest: str,
    report: MigrationReport,
    *,
    atomic: str,
    on_unknown: str,
) -> None:
    tracker.init_tracking_table()
    history = tracker.history_by_name()
    declared = {m.name for m in planned}
    report.unknown = [name for name in history if name not in declared]
    if report.unknown:
        text = (
            f"migration_history names {len(report.unknown)} migration(s) this code does not declare: "
            f"{', '.join(report.unknown)} (a newer release migrated this database?)"
        )
        if on_unknown == "error":
            raise MigrationError(f"{text}; refusing to start (on_unknown='error')", category="unknown_migrations")
        logger.warning("%s", text)
    for migration in planned:
        row = history.get(migration.name)
        if row is not None and row.is_applied and row.checksum and row.checksum != migration.checksum:
            report.drift.append(migration.name)
    if report.drift:
        logger.warning(
            "migration(s) changed since they were applied (they are not re-run): %s; "
            "see `python -m api.db validate`",
            ", ".join(report.drift),
        )
    pending = [m for m in planned if not (m.name in history and history[m.name].status in APPLIED)]
    report.pending_before = [m.name for m in pending]
    run = _Run(db, tracker, report)
    if pending:
        logger.info("%d pending migration(s): %s", len(pending), ", ".join(report.pending_before))
        if tracker.db_type in TRANSACTIONAL_DDL:
            for group in _groups(pending, atomic):
                if len(group) == 1 and not group[0].atomic:
                    run.run_non_transactional(group[0], history.get(group[0].name))
                else:
                    run.run_transactional(group)
        else:
            for migration in pending:
                run.run_non_transactional(migration, history.get(migration.name))
    if not report.unknown:
        tracker.record_digest(digest)


# -- helpers for applications coming from the alter_db_* pattern -------------------------


def _schema_migrator(migrator: Any) -> SchemaMigrator:
    if isinstance(migrator, Migrator):
        return migrator.schema_migrator
    if isinstance(migrator, SchemaMigrator):
        return migrator
    if isinstance(migrator, peewee.Database):
        return make_schema_migrator(migrator)
    raise ConfigurationError(f"expected a SchemaMigrator, a Migrator or a Database, got {type(migrator).__name__}")


def _alter(migrator: Any, operation: str, table: str, column: str, *args: Any) -> bool:
    schema_migrator = _schema_migrator(migrator)
    db = schema_migrator.database
    engine = db_type(db)
    log = _StatementLog()
    try:
        with log.capture(db), (db.savepoint() if db.in_transaction() else contextlib.nullcontext()):
            schema_migrator.migrate(getattr(schema_migrator, operation)(table, column, *args))
    except Exception as exc:  # classified and logged below; True only when it is safe to go on
        old_new = {"old_name": column, "new_name": args[0]} if operation == "rename_column" and args else {}
        if already_applied(exc, operation, db=db, db_type=engine, table=table, **old_new):
            logger.info("%s %s.%s: already done, skipping", operation, table, column)
            return True
        from api.db.error_handler import StandardErrorHandler

        return StandardErrorHandler.handle_migration_error(exc, table, column, operation, engine, sql=log.last)
    return True


def alter_db_add_column(migrator: Any, table: str, column: str, field: peewee.Field) -> bool:
    """Add ``table.column``; True when added or already there, False (logged at ERROR) otherwise."""
    return _alter(migrator, "add_column", table, column, field)


def alter_db_column_type(migrator: Any, table: str, column: str, field: peewee.Field) -> bool:
    """Change the type of ``table.column``; True when done, False (logged) when the engine refused."""
    return _alter(migrator, "alter_column_type", table, column, field)


def alter_db_rename_column(migrator: Any, table: str, old_name: str, new_name: str) -> bool:
    """Rename ``table.old_name`` to ``new_name``; True when done or already done, False (logged) otherwise."""
    return _alter(migrator, "rename_column", table, old_name, new_name)
