"""Lock-safe schema changes: playhouse.migrate's migrators, fixed where they stop production.

``safe_schema_migrator(db, lock_timeout=..., retries=...)`` returns a subclass of
playhouse.migrate's ``PostgresqlMigrator`` / ``MySQLMigrator`` / ``SqliteMigrator``
with the same operations and four changes:

* every DDL statement waits for its lock at most ``lock_timeout`` seconds, is
  retried with backoff ``retries`` times, and then raises :class:`DDLLockTimeout`
  naming the sessions that held the lock; the lock setting never outlives the
  statement on a pooled connection;
* ``add_column`` with a constant default is one native ``ADD COLUMN ... DEFAULT``
  statement (metadata-only on PostgreSQL 11+, MySQL 8.0.12+, MariaDB 10.3+, SQLite)
  instead of ADD nullable + UPDATE every row + SET NOT NULL;
* ``add_index(..., concurrently=True)`` builds without blocking writers;
* on PostgreSQL, ``alter_column_type(..., using=...)`` and foreign keys added
  ``NOT VALID`` then validated.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import peewee
from peewee import SQL, Entity
from playhouse.migrate import (
    MySQLMigrator,
    Operation,
    PostgresqlMigrator,
    SchemaMigrator,
    SqliteMigrator,
    _truncate_constraint_name,
    make_index_name,
    operation,
)

from api.db.engines import Engine, engine_class, engine_for
from api.db.engines.compat import DatabaseCompat
from api.db.engines.mysql import MySQLEngine
from api.db.engines.postgres import PostgresEngine
from api.db.engines.sqlite import SqliteEngine
from api.db.error_handler import ErrorCategory, StandardErrorHandler
from api.db.exceptions import (
    ConcurrentIndexInTransaction,
    ConfigurationError,
    DDLLockTimeout,
    SchemaConflict,
)
from api.db.schema.blockers import BlockingSession, find_blockers
from api.db.schema.literals import render_literal

logger = logging.getLogger(__name__)


_SCOPE_STATE = threading.local()


def _scopes() -> dict[int, tuple[Any, float]]:
    """This thread's open lock-wait scopes: id(database) -> (DB-API connection, lock_timeout)."""
    found: dict[int, tuple[Any, float]] | None = getattr(_SCOPE_STATE, "scopes", None)
    if found is None:
        found = _SCOPE_STATE.scopes = {}
    return found


# --- settings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LockSettings:
    """How long a DDL statement may wait for its lock, and how often it tries again."""

    lock_timeout: float = 5.0  # seconds per attempt (MySQL/MariaDB round up to whole seconds)
    retries: int = 3  # further attempts after the first
    backoff: float = 0.5  # seconds before the first retry; doubles each time, with jitter
    max_backoff: float = 10.0  # cap on one pause between attempts
    keep_column_defaults: bool = False  # keep the DEFAULT that add_column writes into the schema

    def __post_init__(self) -> None:
        for name in ("lock_timeout", "backoff", "max_backoff"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
        if self.lock_timeout <= 0:
            raise ConfigurationError(f"lock_timeout must be > 0 seconds, got {self.lock_timeout!r}")
        if self.backoff < 0 or self.max_backoff < 0:
            raise ConfigurationError("backoff and max_backoff must be >= 0 seconds")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigurationError(f"retries must be an integer >= 0, got {self.retries!r}")

    def pause(self, attempt: int) -> float:
        """Seconds to sleep after failed attempt ``attempt`` (from 1): exponential, capped, jittered."""
        base = min(self.max_backoff, self.backoff * (2 ** (attempt - 1)))
        return base * random.uniform(0.5, 1.0)


# --- statements and operations ------------------------------------------------------------------


@dataclass
class DDLStep:
    """One DDL statement with what its execution needs beyond the SQL text."""

    sql: str  # as sent to the driver (with %% for a literal % where the driver formats)
    params: tuple[Any, ...] = ()
    table: str | None = None
    outside_transaction: bool = False  # PostgreSQL CONCURRENTLY: refuses to run in a transaction
    before_attempt: Callable[[], None] | None = field(default=None, repr=False)
    quiet: bool = False  # logged at DEBUG, not INFO (one batch of a backfill among hundreds)

    @property
    def shown(self) -> str:
        """The statement as a person reads it."""
        return self.sql.replace("%%", "%") if not self.params else self.sql


class LockSafeOperation(Operation):
    """playhouse.migrate's Operation, executed through the migrator's bounded, retried path.

    playhouse runs each statement with ``database.execute(node)``: no lock bound, no retry.
    """

    migrator: LockSafeMixin

    @property
    def table(self) -> str | None:
        if self.args and isinstance(self.args[0], str) and self.fn.__name__ not in ("sql", "set_search_path"):
            return self.args[0]
        return None

    def execute(self, node: Any) -> None:
        sql, params = self.migrator.make_context().sql(node).query()
        self.migrator.run_step(DDLStep(sql, tuple(params), self.table))

    def _handle_result(self, result: Any) -> None:
        if isinstance(result, DDLStep):
            self.migrator.run_step(result)
        elif isinstance(result, Operation) and not isinstance(result, LockSafeOperation):
            # An operation built by playhouse's own code (e.g. through super()): run it our way too.
            LockSafeOperation(result.migrator, result.fn, *result.args, **result.kwargs).run()
        else:
            super()._handle_result(result)


def lock_safe_operation(fn: Callable[..., Any]) -> Callable[..., LockSafeOperation]:
    """Like playhouse.migrate's ``@operation``, returning a :class:`LockSafeOperation`."""

    @functools.wraps(fn)
    def inner(self: Any, *args: Any, **kwargs: Any) -> LockSafeOperation:
        return LockSafeOperation(self, fn, *args, **kwargs)

    return inner


# Every function decorated by playhouse's @operation shares this code object.
_PLAYHOUSE_OPERATION_CODE = operation(lambda self: None).__code__


def _escape_percent(database: peewee.Database, sql: str) -> str:
    # psycopg2 and pymysql apply %-formatting to every statement peewee sends (params or ()).
    return sql.replace("%", "%%") if database.param == "%s" else sql


# --- the migrator mixin -------------------------------------------------------------------------


class LockSafeMixin(SchemaMigrator):
    """The engine-neutral part of the lock-safe migrators (mixed in before playhouse's class)."""

    serves: ClassVar[type[Engine]]  # the engine family this migrator is for
    engine: ClassVar[str] = ""  # its name, for error classification and log lines

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "serves" in vars(cls):
            cls.engine = cls.serves.name
        # Re-wrap every inherited playhouse operation so calling it yields a LockSafeOperation.
        for name in dir(cls):
            attr = getattr(cls, name, None)
            if getattr(attr, "__code__", None) is _PLAYHOUSE_OPERATION_CODE:
                setattr(cls, name, lock_safe_operation(attr.__wrapped__))  # type: ignore[union-attr]

    def __init__(
        self, database: peewee.Database, schema: str | None = None, *, settings: LockSettings | None = None
    ) -> None:
        super().__init__(database, schema=schema)
        self.settings = settings or LockSettings()
        self._compat: DatabaseCompat | None = None
        # Direct: inside a unit the caller rolls back and replays on any error (the runner's fast path):
        # no savepoint of its own around a statement, no retry; a failure goes straight up.
        self.direct = False

    def with_settings(self, **changes: Any) -> LockSafeMixin:
        """A migrator on the same database with some settings changed (e.g. one migration's lock_timeout)."""
        other = type(self)(self.database, schema=self.schema, settings=replace(self.settings, **changes))
        other._compat = self._compat  # the server's facts, read once
        other.direct = self.direct
        return other

    # --- the lock-wait bound, set once for a whole unit ------------------------------------------

    # Where the engine's lock-wait setting lives: "transaction" (SET LOCAL, ends with it) or "session".
    scope_level: ClassVar[str] = "session"

    @contextlib.contextmanager
    def scope(self, level: str) -> Iterator[None]:
        """Set the lock-wait bound once for the block (a transaction, or a run), restored once at its end.

        Statements inside, on the same connection and with the same ``lock_timeout``, are sent as they
        are; the bound still applies to each. A no-op where ``level`` is not this engine's.
        """
        if level != self.scope_level:
            yield
            return
        restore = self._open_scope()
        if restore is None:
            yield
            return
        key, conn = id(self.database), self.database.connection()
        scopes = _scopes()
        previous = scopes.get(key)
        scopes[key] = (conn, self.settings.lock_timeout)
        try:
            yield
        finally:
            if previous is None:
                scopes.pop(key, None)
            else:
                scopes[key] = previous
            restore()

    def _open_scope(self) -> Callable[[], None] | None:
        """Issue the engine's lock-wait setting; return how to restore it (None: no scope here)."""
        return None

    def scoped(self) -> bool:
        """Whether an open scope already bounds this connection's lock waits by our ``lock_timeout``."""
        found = _scopes().get(id(self.database))
        if found is None:
            return False
        conn, timeout = found
        return bool(conn is self.database._state.conn and timeout == self.settings.lock_timeout)

    @property
    def db_engine(self) -> Engine:
        """The engine object of this migrator's database."""
        return engine_for(self.database)

    @property
    def compat(self) -> DatabaseCompat:
        """The live server's capabilities, read once."""
        if self._compat is None:
            self._compat = DatabaseCompat.for_database(self.database)
        return self._compat

    def _playhouse(self, name: str) -> Callable[..., Any]:
        """playhouse.migrate's implementation of operation ``name``, unwrapped and bound to this migrator."""
        method = getattr(super(), name)
        return functools.partial(method.__wrapped__, self)

    # --- running one statement ------------------------------------------------------------------

    def run_step(self, step: DDLStep) -> None:
        """Execute ``step`` with a bounded lock wait, retrying lock timeouts with backoff."""
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            if step.before_attempt is not None:
                step.before_attempt()
            started = time.monotonic()
            if attempt == 1:
                logger.log(logging.DEBUG if step.quiet else logging.INFO, "DDL (lock wait <= %.1f s): %s",
                           self.settings.lock_timeout, step.shown)
            else:
                logger.info("DDL attempt %d of %d: %s", attempt, attempts, step.shown)
            try:
                self._execute_bounded(step)
                return
            except peewee.DatabaseError as exc:
                info = StandardErrorHandler.classify(exc, self.engine)
                if self.direct or info.category is not ErrorCategory.LOCK_TIMEOUT:
                    raise  # direct: the caller rolls back and replays with retries
                waited = time.monotonic() - started
                if attempt == attempts:
                    raise self._lock_timeout_error(step, attempts, exc) from exc
                pause = self.settings.pause(attempt)
                logger.warning(
                    "DDL on %s did not get its lock within %.1f s (attempt %d of %d: %s); retrying in %.2f s",
                    step.table or "the database", waited, attempt, attempts, info.message, pause,
                )
                time.sleep(pause)

    def _lock_timeout_error(self, step: DDLStep, attempts: int, exc: BaseException) -> DDLLockTimeout:
        blockers = self.blocking_sessions(step.table)
        if blockers:
            named = "; ".join(b.describe() for b in blockers)
            advice = "commit, roll back or end " + (
                "that session" if len(blockers) == 1 else "those sessions"
            )
            advice += self.db_engine.end_session_hint(blockers[0].session_id)
        else:
            named, advice = self.db_engine.no_blocker_texts
        message = (
            f"DDL on {step.table or 'the database'} could not get its lock within "
            f"{self.settings.lock_timeout:g} s in {attempts} attempt(s): {step.shown} -- blocked by {named}; "
            f"{advice}, or raise lock_timeout / retries"
        )
        logger.error("%s", message)
        return DDLLockTimeout(
            message,
            statement=step.shown,
            table=step.table,
            attempts=attempts,
            lock_timeout=self.settings.lock_timeout,
            blockers=list(blockers),
            orig=exc,
        )

    def blocking_sessions(self, table: str | None) -> list[BlockingSession]:
        """The sessions holding locks on ``table`` now; a failing lookup is logged and gives []."""
        try:
            return find_blockers(self.database, table, schema=self.schema)
        except peewee.DatabaseError as exc:
            info = StandardErrorHandler.classify(exc, self.engine)
            logger.warning("could not list the sessions blocking %s (%s): %s", table, info.category.value,
                           info.message)
            return []

    def _execute_bounded(self, step: DDLStep) -> None:
        raise NotImplementedError

    def _restore(self, statement: str, params: tuple[Any, ...] = ()) -> None:
        """Put a session setting back; if that fails the connection is closed, never reused with ours."""
        try:
            self.database.execute_sql(statement, params)
        except peewee.DatabaseError as exc:
            info = StandardErrorHandler.classify(exc, self.engine)
            logger.error(
                "could not restore a session setting (%s: %s); closing the connection so no other "
                "user of the pool inherits it", info.category.value, info.message,
            )
            manual_close = getattr(self.database, "manual_close", None)
            if manual_close is not None:
                manual_close()
            else:
                self.database.close()

    # --- defaults -------------------------------------------------------------------------------

    def _needs_expression_default(self, fld: peewee.Field) -> bool:
        types = self.db_engine.expression_default_types
        return bool(types) and str(fld.field_type).upper() in types.get(self.compat.flavour, frozenset())

    def default_literal(self, fld: peewee.Field) -> str:
        """The field's default (called once if callable) as a SQL literal for this engine."""
        value = fld.default() if callable(fld.default) else fld.default
        escapes = self.db_engine.backslash_escapes()
        if isinstance(value, SQL):
            return render_literal(value, self.engine, backslash_escapes=escapes)
        # JSON, arrays, hstore: from the field class (an unbound JSONField has no json_type).
        structured = self.db_engine.structured_default_text(fld, value)
        if structured is not None:
            return render_literal(structured, self.engine, backslash_escapes=escapes)
        return render_literal(fld.db_value(value), self.engine, backslash_escapes=escapes)

    # --- operations -----------------------------------------------------------------------------

    @lock_safe_operation
    def add_column(
        self,
        table: str,
        column_name: str,
        fld: peewee.Field,
        allow_not_null: bool = False,
        *,
        keep_default: bool | None = None,
    ) -> Any:
        """Add a column; a default is written by the engine itself, in one statement.

        playhouse.migrate adds a NOT NULL column nullable, runs ``UPDATE table SET col =
        default`` over every row and then sets NOT NULL: three statements, a full table
        rewrite and every writer blocked meanwhile. Here the default goes into the
        ``ADD COLUMN`` statement as a literal, which the engine applies without touching
        rows. Existing rows get the default whether or not the column is nullable (on
        every engine). The schema default is then dropped again (metadata-only), as
        playhouse leaves none, unless ``keep_default`` (or the migrator's
        ``keep_column_defaults``); SQLite keeps it, as dropping it would rebuild the table.
        """
        keep = self.settings.keep_column_defaults if keep_default is None else keep_default
        index = (fld.unique, getattr(fld, "index_type", None)) if fld.index or fld.unique else None
        # The index is judged on its own against the catalog: see _index_name_free, _index_unless_present.
        if index is not None:
            fld = fld.clone()
            fld.index = fld.unique = False
        operations = self._add_column_statements(table, column_name, fld, allow_not_null, keep)
        if index is not None:
            operations.insert(0, self._index_name_free(table, column_name, index[0]))
            operations.append(self._index_unless_present(table, column_name, *index))
        return operations

    def _add_column_statements(
        self, table: str, column_name: str, fld: peewee.Field, allow_not_null: bool, keep: bool
    ) -> list[Any]:
        """The statements of add_column without its index."""
        if fld.default is None:
            if not fld.null and not allow_not_null:
                raise ConfigurationError(
                    f"column {table}.{column_name} is NOT NULL without a default: give the field default= "
                    "(it is written into existing rows) or null=True"
                )
            return list(self._playhouse("add_column")(table, column_name, fld, allow_not_null))
        literal = self.default_literal(fld)
        if self._needs_expression_default(fld):
            since = self.db_engine.expression_default_since
            if self.compat.version is not None and self.compat.version < since:
                logger.warning("%s %s cannot take a literal DEFAULT on MySQL before 8.0.13; "
                               "adding %s.%s the slow way (UPDATE of every row)",
                               fld.field_type, column_name, table, column_name)
                return list(self._playhouse("add_column")(table, column_name, fld, allow_not_null))
            literal = f"({literal})"  # MySQL 8.0.13+: TEXT/BLOB/JSON defaults must be expressions
        literal = _escape_percent(self.database, literal)
        with_default = fld.clone()
        with_default.constraints = [*(fld.constraints or []), SQL(f"DEFAULT {literal}")]
        operations = list(self._playhouse("add_column")(table, column_name, with_default, True))
        if not keep and not self.db_engine.drop_default_rebuilds_table:
            operations.insert(1, self.drop_column_default(table, column_name))
        return operations

    def _taken_index(self, table: str, column_name: str, unique: bool) -> tuple[str, Any]:
        """(add_column's index name, the index of that name on ``table`` unless it is the same index)."""
        name = make_index_name(table, [column_name])
        for index in self.database.get_indexes(table, self.schema):
            if index.name.lower() != name.lower():
                continue
            found = [str(c).lower() if c is not None else "<expression>" for c in index.columns]
            same = found == [column_name.lower()] and bool(index.unique) == bool(unique)
            return name, None if same else index
        return name, None

    def _index_conflict(self, table: str, column_name: str, index: Any) -> SchemaConflict:
        found = ", ".join(str(c) if c is not None else "<expression>" for c in index.columns)
        return SchemaConflict(
            f"index name {index.name} is already taken by the index {index.name}"
            f"{' (UNIQUE)' if index.unique else ''} on {table} ({found}), "
            f"not one on {table} ({column_name}): "
            "drop or rename that index, or add the column without index=True and add_index(..., name=...) "
            "with another name",
            category="duplicate_index",
            table=table,
        )

    @lock_safe_operation
    def _index_name_free(self, table: str, column_name: str, unique: bool) -> None:
        """Before ADD COLUMN: an index already holding the new column's index name cannot be on that column.

        (SQLite even reads it as an index on the string 'column' until the column exists, then
        as an index on the column, with entries computed from the string.)
        """
        columns = {c.name.lower() for c in self.database.get_columns(table, self.schema)}
        if column_name.lower() in columns:
            return None  # ADD COLUMN will meet the column: the catalog judges that failure
        name = make_index_name(table, [column_name])
        indexes = self.database.get_indexes(table, self.schema)
        index = next((i for i in indexes if i.name.lower() == name.lower()), None)
        if index is not None:
            raise self._index_conflict(table, column_name, index)
        return None

    @lock_safe_operation
    def _index_unless_present(self, table: str, column_name: str, unique: bool, using: str | None) -> Any:
        """add_column's index, checked against the catalog once the column exists (run after ADD COLUMN).

        The index name already on this table: the same index (same column, same uniqueness)
        is in effect and nothing is sent; any other index of that name is a
        :class:`SchemaConflict` naming it, never a rollback taken for adoption.
        """
        name, taken = self._taken_index(table, column_name, unique)
        if taken is not None:
            raise self._index_conflict(table, column_name, taken)
        if any(i.name.lower() == name.lower() for i in self.database.get_indexes(table, self.schema)):
            logger.info("index %s on %s (%s) already exists: not created again", name, table, column_name)
            return None
        return self.add_index(table, (column_name,), unique, using)

    @lock_safe_operation
    def add_index(
        self,
        table: str,
        columns: tuple[str, ...] | list[str],
        unique: bool = False,
        using: str | None = None,
        where: Any = None,
        nulls_distinct: bool | None = None,
        name: str | None = None,
        *,
        concurrently: bool = False,
    ) -> Any:
        """Create an index; ``concurrently=True`` builds it without blocking writers where the engine can.

        playhouse.migrate only emits a plain CREATE INDEX, which on PostgreSQL holds a
        SHARE lock (no INSERT/UPDATE/DELETE) for the whole build and on MySQL lets the
        server pick the algorithm.
        """
        ctx = self._playhouse("add_index")(table, tuple(columns), unique, using, where, nulls_distinct, name)
        if not concurrently:
            return ctx
        return self._concurrent_index(ctx, table, name or make_index_name(table, tuple(columns)))

    def _concurrent_index(self, ctx: Any, table: str, index_name: str) -> Any:
        logger.info("%s has no concurrent index build; CREATE INDEX on %s runs plainly", self.engine, table)
        return ctx


# --- PostgreSQL ---------------------------------------------------------------------------------


# Statements PostgreSQL refuses inside a transaction block, when they come as raw SQL (m.sql).
_PG_NO_TRANSACTION_SQL = re.compile(
    r"^\s*(?:(?:CREATE\s+(?:UNIQUE\s+)?|DROP\s+)INDEX\s+CONCURRENTLY|REINDEX\b.*\bCONCURRENTLY|VACUUM\b"
    r"|CREATE\s+DATABASE|DROP\s+DATABASE|ALTER\s+SYSTEM)",
    re.IGNORECASE | re.DOTALL,
)


class LockSafePostgresqlMigrator(LockSafeMixin, PostgresqlMigrator):
    """PostgreSQL: ``lock_timeout`` per statement, CONCURRENTLY indexes, USING casts, NOT VALID FKs."""

    serves = PostgresEngine
    # playhouse inlines REFERENCES in ADD COLUMN, which validates every row under a SHARE ROW
    # EXCLUSIVE lock on both tables; the explicit path below adds the key NOT VALID first.
    explicit_create_foreign_key = True

    scope_level = "transaction"

    def add_inline_fk_sql(self, ctx: Any, fld: peewee.Field) -> None:
        return None

    @property
    def _timeout_text(self) -> str:
        return f"{int(round(self.settings.lock_timeout * 1000))}ms"

    def _open_scope(self) -> Callable[[], None] | None:
        if not self.database.in_transaction():
            return None
        self.database.execute_sql("SET LOCAL lock_timeout = %s", (self._timeout_text,))
        return lambda: None  # SET LOCAL ends with the transaction

    def _execute_bounded(self, step: DDLStep) -> None:
        database = self.database
        timeout = self._timeout_text
        outside = step.outside_transaction or _PG_NO_TRANSACTION_SQL.match(step.sql)
        if outside:
            if database.in_transaction():
                raise ConcurrentIndexInTransaction(
                    f"{step.shown} cannot run inside a transaction; run this migration outside one "
                    "(non-atomic) or drop concurrently=True"
                )
            previous = database.execute_sql("SELECT current_setting('lock_timeout')").fetchone()[0]
            database.execute_sql("SET lock_timeout = %s", (timeout,))
            try:
                database.execute_sql(step.sql, step.params)
            finally:
                self._restore("SET lock_timeout = %s", (previous,))
            return
        nested = database.in_transaction()
        # Own transaction, or a savepoint in the caller's: a lock timeout rolls back only this
        # statement, and SET LOCAL ends with the transaction at the latest. Direct: the caller's unit.
        with contextlib.nullcontext() if self.direct and nested else database.atomic():
            if self.scoped():  # bounded by this transaction's SET LOCAL; the savepoint is for retries
                database.execute_sql(step.sql, step.params)
                return
            previous = database.execute_sql("SELECT current_setting('lock_timeout')").fetchone()[0]
            database.execute_sql("SET LOCAL lock_timeout = %s", (timeout,))
            database.execute_sql(step.sql, step.params)
            if nested:
                database.execute_sql("SET LOCAL lock_timeout = %s", (previous,))

    def _index_entity_sql(self, index_name: str, schema: str) -> str:
        return str(self.make_context().sql(Entity(schema, index_name)).query()[0])

    def _drop_invalid_index(self, index_name: str) -> None:
        row = self.database.execute_sql(
            "SELECT n.nspname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = coalesce(%s, current_schema()) AND NOT i.indisvalid",
            (index_name, self.schema),
        ).fetchone()
        if row is None:
            return
        logger.warning("dropping the invalid index %s.%s left by an earlier failed build", row[0], index_name)
        target = self._index_entity_sql(index_name, row[0])
        self.run_step(
            DDLStep(f"DROP INDEX CONCURRENTLY IF EXISTS {target}", (), None, outside_transaction=True)
        )

    def _concurrent_index(self, ctx: Any, table: str, index_name: str) -> Any:
        sql, params = ctx.query()
        concurrent_sql, count = re.subn(r"^CREATE (UNIQUE )?INDEX ", r"CREATE \1INDEX CONCURRENTLY ", sql)
        if count != 1:  # peewee's Index always starts so; anything else is a peewee change to look at
            raise ConfigurationError(f"unexpected CREATE INDEX statement from peewee: {sql}")
        return DDLStep(
            concurrent_sql,
            tuple(params),
            table,
            outside_transaction=True,
            before_attempt=functools.partial(self._drop_invalid_index, index_name),
        )

    @lock_safe_operation
    def drop_index(self, table: str, index_name: str, *, concurrently: bool = False) -> Any:
        """Drop an index; ``concurrently=True`` waits for readers and writers instead of blocking them.

        playhouse only emits ``DROP INDEX``, which takes an ACCESS EXCLUSIVE lock on the table.
        """
        ctx = self._playhouse("drop_index")(table, index_name)
        if not concurrently:
            return ctx
        sql, params = ctx.query()
        return DDLStep(sql.replace("DROP INDEX ", "DROP INDEX CONCURRENTLY ", 1), tuple(params), table,
                       outside_transaction=True)

    @lock_safe_operation
    def alter_column_type(
        self, table: str, column: str, fld: peewee.Field, cast: Any = None, *, using: Any = None
    ) -> Any:
        """Change a column's type; ``using`` is the ``USING`` expression (``True``: ``column::newtype``).

        playhouse accepts a ``cast=`` string; ``using=True`` spares writing the obvious cast
        that PostgreSQL will not do implicitly (VARCHAR of digits to INTEGER, for one).
        """
        if using is not None and cast is not None:
            raise ConfigurationError("pass either using= or cast=, not both")
        expression = cast if using is None else using
        if expression is True:
            ctx = self.make_context()
            column_sql = ctx.sql(Entity(column)).query()[0]
            datatype = fld.ddl_datatype(self.make_context()).sql
            expression = SQL(f"{column_sql}::{datatype}")
        return self._playhouse("alter_column_type")(table, column, fld, expression)

    @lock_safe_operation
    def add_foreign_key_constraint(
        self,
        table: str,
        column_name: str,
        rel: str,
        rel_column: str,
        on_delete: str | None = None,
        on_update: str | None = None,
        constraint_name: str | None = None,
        rel_schema: str | None = None,
    ) -> Any:
        """Add a foreign key NOT VALID (brief lock, no scan), then VALIDATE it (scan without blocking writes).

        playhouse adds it in one statement that scans the whole table while holding a
        SHARE ROW EXCLUSIVE lock on both tables.
        """
        add = self._playhouse("add_foreign_key_constraint")(
            table, column_name, rel, rel_column, on_delete, on_update, constraint_name, rel_schema
        )
        add.literal(" NOT VALID")
        name = _truncate_constraint_name(constraint_name or f"fk_{table}_{column_name}_refs_{rel}")
        validate = (
            self._alter_table(self.make_context(), table).literal(" VALIDATE CONSTRAINT ").sql(Entity(name))
        )
        return [add, validate]


# --- MySQL / MariaDB ----------------------------------------------------------------------------


class LockSafeMySQLMigrator(LockSafeMixin, MySQLMigrator):
    """MySQL and MariaDB: ``lock_wait_timeout`` per statement, online (INPLACE, LOCK=NONE) index builds."""

    serves = MySQLEngine

    @property
    def _seconds(self) -> int:
        return max(1, math.ceil(self.settings.lock_timeout))  # the server takes whole seconds

    def _open_scope(self) -> Callable[[], None] | None:
        if MySQLEngine.set_statement(self.compat.flavour):
            return None  # SET STATEMENT bounds each statement at no cost
        previous = self.database.execute_sql(
            "SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout"
        ).fetchone()
        self.database.execute_sql(
            "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s",
            (self._seconds, self._seconds),
        )
        return functools.partial(
            self._restore, "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s",
            (previous[0], previous[1]),
        )

    def _execute_bounded(self, step: DDLStep) -> None:
        database = self.database
        seconds = self._seconds
        if self.scoped():
            database.execute_sql(step.sql, step.params)  # the run's SET SESSION bounds it
            return
        if MySQLEngine.set_statement(self.compat.flavour):
            # SET STATEMENT scopes the settings to this one statement: nothing to restore.
            database.execute_sql(
                f"SET STATEMENT lock_wait_timeout={seconds}, "
                f"innodb_lock_wait_timeout={seconds} FOR {step.sql}",
                step.params,
            )
            return
        previous = database.execute_sql(
            "SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout"
        ).fetchone()
        database.execute_sql(
            "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s", (seconds, seconds)
        )
        try:
            database.execute_sql(step.sql, step.params)
        finally:
            self._restore(
                "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s",
                (previous[0], previous[1]),
            )

    def _concurrent_index(self, ctx: Any, table: str, index_name: str) -> Any:
        # Refused (errno 1846) rather than silently copying the table when online DDL cannot be used.
        return ctx.literal(" ALGORITHM=INPLACE LOCK=NONE")

    @lock_safe_operation
    def drop_index(self, table: str, index_name: str, *, concurrently: bool = False) -> Any:
        """Drop an index; ``concurrently=True`` asks for ALGORITHM=INPLACE, LOCK=NONE.

        playhouse emits a bare ``DROP INDEX``, leaving the lock level to the server.
        """
        ctx = self._playhouse("drop_index")(table, index_name)
        return ctx.literal(" ALGORITHM=INPLACE LOCK=NONE") if concurrently else ctx

    @lock_safe_operation
    def rename_column(self, table: str, old_name: str, new_name: str) -> Any:
        """playhouse's CHANGE, after checking the catalog that the column exists.

        playhouse reads the column's definition with ``DESCRIBE`` and gets False for a
        missing column, then fails with "'bool' object has no attribute 'sql'".
        """
        names = {c.name.lower() for c in self.database.get_columns(table, self.schema)}
        if old_name.lower() not in names:
            where = f"{table}.{old_name}"
            raise SchemaConflict(
                f"column {where} does not exist, so it cannot be renamed to {new_name}"
                + (f" (table {table} has no columns: does it exist?)" if not names else "")
                + ": check the table and column names of rename_column",
                category="missing_column" if names else "missing_table",
                table=table,
            )
        return self._playhouse("rename_column")(table, old_name, new_name)

    @lock_safe_operation
    def alter_column_type(
        self, table: str, column: str, fld: peewee.Field, cast: Any = None, *, using: Any = None
    ) -> Any:
        """playhouse's MODIFY; ``using=`` (PostgreSQL only) is refused with a clear error, not a TypeError."""
        if using is not None:
            raise ConfigurationError(
                "MySQL/MariaDB have no ALTER COLUMN ... USING; they convert values implicitly"
            )
        return self._playhouse("alter_column_type")(table, column, fld, cast)


# --- SQLite -------------------------------------------------------------------------------------


class LockSafeSqliteMigrator(LockSafeMixin, SqliteMigrator):
    """SQLite: ``PRAGMA busy_timeout`` per statement, restored afterwards."""

    serves = SqliteEngine

    def _open_scope(self) -> Callable[[], None] | None:
        database = self.database
        previous = int(database.execute_sql("PRAGMA busy_timeout").fetchone()[0])
        database.execute_sql(f"PRAGMA busy_timeout = {int(round(self.settings.lock_timeout * 1000))}")
        return functools.partial(self._restore, f"PRAGMA busy_timeout = {previous}")

    def _execute_bounded(self, step: DDLStep) -> None:
        database = self.database
        if self.scoped():
            database.execute_sql(step.sql, step.params)  # the run's busy_timeout bounds it
            return
        previous = int(database.execute_sql("PRAGMA busy_timeout").fetchone()[0])
        database.execute_sql(f"PRAGMA busy_timeout = {int(round(self.settings.lock_timeout * 1000))}")
        try:
            database.execute_sql(step.sql, step.params)
        finally:
            self._restore(f"PRAGMA busy_timeout = {previous}")

    @lock_safe_operation
    def alter_column_type(
        self, table: str, column: str, fld: peewee.Field, cast: Any = None, *, using: Any = None
    ) -> Any:
        """playhouse's table rebuild; ``using=`` (PostgreSQL only) is refused with a clear error."""
        if using is not None:
            raise ConfigurationError("SQLite has no ALTER COLUMN ... USING; its columns take any value")
        return self._playhouse("alter_column_type")(table, column, fld, cast)


# --- the factory --------------------------------------------------------------------------------

MIGRATORS: dict[type[Engine], type[LockSafeMixin]] = {
    cls.serves: cls for cls in (LockSafePostgresqlMigrator, LockSafeMySQLMigrator, LockSafeSqliteMigrator)
}


def safe_schema_migrator(
    database: peewee.Database,
    *,
    lock_timeout: float = 5.0,
    retries: int = 3,
    backoff: float = 0.5,
    max_backoff: float = 10.0,
    keep_column_defaults: bool = False,
    schema: str | None = None,
) -> LockSafeMixin:
    """The lock-safe playhouse.migrate SchemaMigrator for ``database``'s engine.

    Every DDL statement waits at most ``lock_timeout`` seconds for its lock and is
    tried ``1 + retries`` times with exponential backoff starting at ``backoff``
    seconds (capped at ``max_backoff``); then :class:`DDLLockTimeout` names the blocker.
    """
    if isinstance(database, peewee.DatabaseProxy):
        if database.obj is None:
            raise ConfigurationError("the database proxy is not initialized; call proxy.initialize(db) first")
        database = database.obj
    settings = LockSettings(
        lock_timeout=lock_timeout,
        retries=retries,
        backoff=backoff,
        max_backoff=max_backoff,
        keep_column_defaults=keep_column_defaults,
    )
    migrator_class = MIGRATORS[engine_class(database)]
    return migrator_class(database, schema=schema, settings=settings)
