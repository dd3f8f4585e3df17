"""The ``m`` each migration receives: playhouse.migrate's operations made lock-safe, run at once, counted.

An operation that fails while its effect is already in the database (a duplicate column on
``add_column`` whose column the catalog shows with a compatible type...) is logged and counted
as done (:mod:`api.db.migrate.adoption` decides, from the catalog, never from the error alone);
any other failure becomes
:class:`OperationFailed`, which the runner turns into a :class:`MigrationError`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import peewee
from playhouse.migrate import Operation, SchemaMigrator

from api.db.engines import engine_for
from api.db.error_handler import ErrorCategory, ErrorInfo, already_applied, classify_error
from api.db.exceptions import (
    MigrationDeclarationError,
    MigrationLockLost,
    MissingPrimaryKey,
    SchemaConflict,
    UnsupportedCapability,
)
from api.db.migrate.adoption import Adoption, adoption_verdict, split_existing_tables, table_name
from api.db.migrate.backfill import Backfill, BackfillSpec, BackfillStats, Throttle
from api.db.migrate.inverse import Entry, InverseRecorder
from api.db.migrate.sqltext import is_data_change, is_transaction_boundary, is_transaction_control
from api.db.migrate.txlog import SAVEPOINT, logged_transaction
from api.db.redact import redact_text
from api.db.schema.ddl import safe_schema_migrator
from api.db.schema.fields import validate_models

logger = logging.getLogger(__name__)


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


class StatementLog:
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
            if threading.get_ident() != thread or is_transaction_control(event.sql):
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


class TransactionControlRefused(Exception):
    """Internal: a transactional migration tried to end or open a transaction; nothing reached the server."""

    def __init__(self, migration: str, statement: str) -> None:
        super().__init__(
            f"migration {migration!r} tried to run {statement!r} inside its transaction: "
            "transaction control is refused there (it would commit or roll back earlier work). "
            "Remove it, or declare the "
            "migration Migration(..., atomic=False) to manage transactions yourself"
        )
        self.migration = migration
        self.statement = statement

    def info(self) -> ErrorInfo:
        """This refusal as a classified error, for the runner's MigrationError."""
        return ErrorInfo(ErrorCategory.TRANSACTION_CONTROL, False, False, None, str(self), self)


class TransactionGuard:
    """Refuses, on this thread, what would end or open the migration's transaction, before it is sent.

    Peewee's query hooks fire after a statement ran, so the guard wraps the database's own
    ``execute_sql``, ``begin``, ``commit`` and ``rollback`` for the block: ``m.sql("COMMIT")``,
    ``m.db.commit()``, ``m.db.transaction().commit()`` all pass through them. A refusal the
    migration catches is still reported (``refused``).
    """

    WRAPPED = ("execute_sql", "begin", "commit", "rollback")

    def __init__(self, db: peewee.Database, migration: str) -> None:
        self.db = db
        self.migration = migration
        self.refused: TransactionControlRefused | None = None

    def _refuse(self, statement: str) -> None:
        self.refused = TransactionControlRefused(self.migration, statement)
        raise self.refused

    def _wrappers(self, thread: int) -> dict[str, Callable[..., Any]]:
        db = self.db
        originals = {name: getattr(db, name) for name in self.WRAPPED}

        def execute_sql(sql: str, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == thread and is_transaction_boundary(sql):
                self._refuse(strip_text(sql))
            return originals["execute_sql"](sql, *args, **kwargs)

        def method(name: str) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                if threading.get_ident() == thread:
                    self._refuse(f"db.{name}()")
                return originals[name](*args, **kwargs)

            return call

        return {"execute_sql": execute_sql, **{name: method(name) for name in self.WRAPPED[1:]}}

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        db = self.db
        shadowed = {name: db.__dict__[name] for name in self.WRAPPED if name in db.__dict__}
        state: Any = db._state  # type: ignore[attr-defined]
        stack = list(state.transactions)  # peewee's session_commit() pops before it commits
        for name, wrapper in self._wrappers(threading.get_ident()).items():
            setattr(db, name, wrapper)
        try:
            yield
        finally:
            for name in self.WRAPPED:
                if name in shadowed:
                    setattr(db, name, shadowed[name])
                else:
                    delattr(db, name)
            state.transactions[:] = stack


def strip_text(sql: str) -> str:
    """A statement shortened for a message."""
    text = " ".join(redact_text(sql).split())
    return text if len(text) <= 80 else text[:77] + "..."


@contextlib.contextmanager
def keeping_error(unit: contextlib.AbstractContextManager[Any], engine: str) -> Iterator[None]:
    """``unit`` (a transaction or savepoint) whose failing rollback does not hide the error that caused it.

    On a lost connection the rollback fails too (``connection already closed``): that is logged,
    and the original error goes on, so the migration and the cause are named.
    """
    unit.__enter__()
    try:
        yield
    except BaseException as exc:
        try:
            unit.__exit__(type(exc), exc, exc.__traceback__)
        except (peewee.DatabaseError, peewee.InterfaceError) as rollback_error:
            info = classify_error(rollback_error, engine)
            logger.warning("rollback after %s failed too (%s: %s)", type(exc).__name__, info.category.value,
                           info.message)  # fmt: skip
        raise
    unit.__exit__(None, None, None)


class OperationFailed(Exception):
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
        atomic: bool = False,
        resume_key: str | None = None,
        on_batch: Callable[[int, str], None] | None = None,
        planning: bool = False,
        inverse_seed: Sequence[Entry] | None = None,
        fast: bool = False,
    ) -> None:
        self._db = db
        # Fast: the runner rolls back and replays this migration carefully on any failure, so an
        # operation needs no savepoint of its own; a failure is flagged (``replay``) and raised at once.
        self.fast = fast
        self.replay = False
        self.schema_migrator = schema_migrator
        self.engine = engine_for(db).name
        self.migration = migration
        self.resume_after = resume_after
        self.on_progress = on_progress
        self.completed: list[str] = []  # descriptions, in order, of operations now in effect
        self.executed = 0  # operations that changed something in this run
        self.already = 0  # operations found done (adoption, resumption)
        self.skipped_tables: list[str] = []  # tables create_tables found existing and left alone
        self.log = StatementLog()
        self.atomic = atomic  # the migration's declaration: a backfill refuses an atomic one
        self.resume_key = resume_key  # JSON of the last key an interrupted backfill committed
        self.on_batch = on_batch  # (operations completed, key): a backfill batch's fenced progress write
        self.planning = planning  # a preview: a backfill shows its first batch only
        self.backfills: list[tuple[str, str, int, int]] = []  # planned (table, column, rows, batch_size)
        # Transactions open when the run began are the runner's (SQLite's lock is one for the whole run);
        # a backfill refuses only those the migration itself opened.
        self.base_depth = db.transaction_depth()
        self.inverse = InverseRecorder(inverse_seed)  # the way back, one entry per operation

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
        if params is None and engine_for(self._db).pyformat:
            # peewee always passes a params tuple (``params or ()``), and psycopg2 / PyMySQL
            # then read every % as a placeholder: '100%' would fail with "tuple index out of range".
            sent = statement.replace("%", "%%")
        self.run_operation("sql", (statement,), {}, self.schema_migrator.sql(sent, params))

    def create_tables(self, *models: type[peewee.Model], safe: bool = True) -> None:
        """Create the tables (and indexes) of ``models`` on this database; existing ones are left alone.

        A model whose table exists is skipped whole: no CREATE INDEX for an older table, whose
        columns may differ from the model's (its changes belong in their own migrations).
        """
        validate_models(models, self._db)  # logs fields that will not work as written on this engine
        existing, missing = split_existing_tables(self._db, models)
        if existing:
            names = [table_name(m) for m in existing]
            self.skipped_tables.extend(names)
            logger.info(
                "%s: create_tables leaves the existing table(s) %s alone", self.migration, ", ".join(names)
            )

        def create() -> None:
            with self._db.bind_ctx(missing):
                self._db.create_tables(missing, safe=safe)

        targets = {"tables": tuple((m._meta.table_name, m._meta.schema) for m in models)}
        shown = tuple(m.__name__ for m in models)
        if missing:
            self._run("create_tables", shown, create, targets)
        else:
            self._run("create_tables", shown, lambda: None, targets, adopted=True)

    def backfill(
        self,
        table: str,
        column: str,
        value_or_expression: Any,
        where: Any = None,
        batch_size: int = 10_000,
        pause: float = 0.0,
        *,
        throttle: Throttle | None = None,
    ) -> BackfillStats | None:
        """Set ``column`` on the rows of ``table`` (matching ``where``) in primary-key ranges, batch by batch.

        Each batch commits on its own with its progress; an interrupted backfill resumes after its last
        batch. The migration must be declared ``atomic=False``. ``throttle``: called between batches,
        returns seconds to wait (replica lag); ``pause``: seconds between batches. Returns what it did.
        """
        spec = BackfillSpec(table, column, value_or_expression, where, batch_size, pause, throttle)
        description = describe_operation("backfill", (table, column))
        index = len(self.completed)
        if index < self.resume_after:
            logger.info("%s: %s completed in an earlier run, not repeated", self.migration, description)
            self.completed.append(description)
            self.already += 1
            return None
        try:
            stats = self._backfill(spec, index)
        except MigrationLockLost:
            raise
        except Exception as exc:  # classified: the typed refusals keep their own category
            raise OperationFailed(description, self._backfill_error(exc), self.log.last) from exc
        self.completed.append(description)
        self.executed += 1
        self._progress()
        return stats

    def _backfill(self, spec: BackfillSpec, index: int) -> BackfillStats | None:
        if not self.planning:
            Backfill.check_declaration(
                self.migration, self.atomic, self._db.transaction_depth() > self.base_depth
            )
        with self.log.capture(self._db):
            job = Backfill(self._db, self.schema_migrator, spec, self.migration, self._batch_writer(index))
            if self.planning:
                self.backfills.append((spec.table, spec.column, job.plan(), spec.batch_size))
                return None
            return job.run(self.resume_key if index == self.resume_after else None)

    def _backfill_error(self, exc: BaseException) -> ErrorInfo:
        """A backfill's failure as data: a declaration or key refusal, else the engine's classification."""
        if isinstance(exc, MigrationDeclarationError):
            return ErrorInfo(ErrorCategory.TRANSACTION_CONTROL, False, False, None, str(exc), exc)
        if isinstance(exc, MissingPrimaryKey):
            return ErrorInfo(ErrorCategory.UNSUPPORTED, False, False, None, str(exc), exc)
        return classify_error(exc, self.engine, self.log.last)

    def _batch_writer(self, index: int) -> Callable[[str], None] | None:
        on_batch = self.on_batch
        if on_batch is None:
            return None
        return lambda key: on_batch(index, key)

    def run_operation(
        self, name: str, args: Sequence[Any], kwargs: dict[str, Any], operation: Operation
    ) -> None:
        """Run ``operation`` now, through the schema migrator, with the already-applied rules."""
        self._run(name, args, lambda: self.schema_migrator.migrate(operation), kwargs)

    def _run(
        self,
        name: str,
        args: Sequence[Any],
        action: Callable[[], Any],
        kwargs: dict[str, Any] | None,
        *,
        adopted: bool = False,
    ) -> None:
        description = describe_operation(name, args, kwargs)
        index = len(self.completed)
        self.inverse.before(self._db, self.schema_migrator, index, (name, args, kwargs or {}), description)
        if index < self.resume_after:
            logger.info("%s: %s completed in an earlier run, not repeated", self.migration, description)
            self.completed.append(description)
            self.already += 1
            return
        if adopted:  # found in effect before anything ran (the catalog said so)
            logger.info("%s: %s already in effect, counted as applied", self.migration, description)
            self.completed.append(description)
            self.already += 1
            self._progress()
            return
        with self._data_unit(name, args):
            self._execute(name, args, action, kwargs, description)

    def _data_unit(self, name: str, args: Sequence[Any]) -> contextlib.AbstractContextManager[Any]:
        """Outside a transaction, a data change and its progress record commit together (one transaction).

        Otherwise a process killed between the two leaves the change applied and not recorded, and the
        next booter runs it again (a counter incremented twice on MySQL).
        """
        statement = args[0] if name == "sql" and args and isinstance(args[0], str) else ""
        if statement and not self._db.in_transaction() and is_data_change(statement):
            return self._db.atomic()
        return contextlib.nullcontext()

    def _execute(
        self, name: str, args: Sequence[Any], action: Callable[[], Any], kwargs: dict[str, Any] | None,
        description: str,
    ) -> None:
        """Run the operation; classify a failure and decide from the catalog whether it is in effect."""
        first_statement = len(self.log.statements)
        try:
            with self.log.capture(self._db), self._unit():
                action()
        except (UnsupportedCapability, TransactionControlRefused):
            raise
        except Exception as exc:  # every failure is classified here; unexpected ones become _OperationFailed
            statements = self.log.statements[first_statement:]
            statement = self.log.failed or (statements[-1] if statements else None)
            if isinstance(exc, SchemaConflict):
                statement = exc.statement  # the catalog stopped it: no statement failed
            info = classify_error(exc, self.engine, statement)
            if self.fast or info.category == ErrorCategory.CONNECTION_LOST:  # no catalog to ask now
                self.replay = self.fast
                raise OperationFailed(description, info, statement) from exc
            verdict = self._already_applied(exc, name, args, kwargs or {}, statement, description)
            if verdict.completed_now:
                self.completed.append(description)
                self.executed += 1
                self._progress()
                return
            if verdict.in_effect:
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
            raise OperationFailed(description, info, statement) from exc
        self.completed.append(description)
        self.executed += 1
        logger.debug("%s: %s done", self.migration, description)
        self._progress()

    def _already_applied(
        self,
        exc: BaseException,
        name: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        statement: str | None,
        description: str,
    ) -> Adoption:
        """Is the failed operation's effect in the database? The error is evidence; the catalog decides."""
        table = args[0] if args and isinstance(args[0], str) else None
        if name == "rename_column" and len(args) >= 3:
            return Adoption(already_applied(
                exc, name, db=self._db, db_type=self.engine, table=table, old_name=args[1], new_name=args[2]
            ))
        if name == "rename_table" and len(args) >= 2:
            return Adoption(already_applied(
                exc, name, db=self._db, db_type=self.engine, old_name=args[0], new_name=args[1]
            ))
        if name == "create_tables":
            args = kwargs.get("tables", ())
        try:
            return adoption_verdict(self._db, self.schema_migrator, exc, name, args, kwargs, statement)
        except SchemaConflict as conflict:
            info = classify_error(conflict, self.engine)
            raise OperationFailed(description, info, conflict.statement or statement) from conflict

    @contextlib.contextmanager
    def _unit(self) -> Iterator[None]:
        # Inside a transaction each operation gets a SAVEPOINT: on PostgreSQL an error
        # would otherwise abort the whole transaction ("current transaction is aborted").
        if self._db.in_transaction() and not self.fast:
            with keeping_error(logged_transaction(self._db, self._db.savepoint(), kind=SAVEPOINT,
                                             migrations=[self.migration]), self.engine):
                yield
        else:
            yield

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.completed)
