"""The engine interface: what api.db needs to know about one engine family, in one place.

One subclass per family lives beside this file (``postgres.py``, ``mysql.py`` for MySQL
and MariaDB, ``sqlite.py``). Code outside ``engines/`` asks ``engine_for(db)`` and never
compares engine names. Facts that differ by flavour or server version (the capability
matrix of :class:`~api.db.engines.compat.DatabaseCompat`) are :class:`Flavour` data;
facts that need SQL are methods. To add an engine, see docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import peewee

from api.db.exceptions import MigrationLockLost, MigrationLockTimeout

if TYPE_CHECKING:
    from api.db.engines.info import ServerInfo
    from api.db.engines.statements import StatementEffect

logger = logging.getLogger(__name__)

LOCK_NAMESPACE = "api.db.migrate"


@dataclass(frozen=True)
class Flavour:
    """One server product of an engine family, as capability data (see engines/compat.py for the flags)."""

    name: str  # postgres, mysql, mariadb, sqlite
    title: str  # PostgreSQL, MySQL, MariaDB, SQLite
    capabilities: Mapping[str, Any]  # flag -> value on a current server
    # flag -> (from, before)
    version_gates: Mapping[str, tuple[tuple[int, ...], Any]] = field(default_factory=dict)
    extension_gates: Mapping[str, str] = field(default_factory=dict)  # flag -> extension it needs
    min_version: tuple[int, ...] = (0,)  # oldest release preflight accepts without a warning


def scalar(cursor: Any, sql: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of ``sql`` on a DB-API cursor (None when no row)."""
    cursor.execute(sql, params)
    row = cursor.fetchone()
    return row[0] if row else None


def describe_holder(holder: Mapping[str, Any]) -> str:
    """``pid=123, application_name=app``: the lock holder in one line."""
    if not holder:
        return "holder unknown (the lock was released meanwhile, or the server does not say)"
    return ", ".join(f"{k}={v}" for k, v in holder.items() if v not in (None, ""))


# schema: peewee's engine-neutral column type table, completed by each engine's database class.
PEEWEE_BASE_TYPES: dict[str, str] = dict(vars(peewee)["FIELD"])
# -- connections, pool and health: what preflight reads from the server.
@dataclass
class ServerFacts:
    """Connection limits, inherited timeouts and settings of a live server (preflight's facts)."""

    max_connections: int | None = None
    current_connections: int | None = None
    timeouts: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)


@dataclass
class MemberRole:
    """What one server is in its cluster: primary, replica (with lag) or Galera node (with state)."""

    role: str = "unknown"  # primary, replica, galera_node, standalone, unknown
    lag_seconds: float | None = None  # replicas: how far replay is behind (inf: replication stopped)
    state: str | None = None  # Galera: wsrep_local_state_comment (Synced, Donor/Desynced, Joining...)
    cluster_size: int | None = None  # Galera: wsrep_cluster_size
    not_ready: str | None = None  # why this member must not take traffic (an engine fact), None if it may

    def as_dict(self) -> dict[str, Any]:
        lag = self.lag_seconds
        shown = None if lag is None else (lag if lag != float("inf") else "stopped")
        return {"role": self.role, "lag_seconds": shown, "state": self.state,
                "cluster_size": self.cluster_size}  # fmt: skip


class Engine:
    """One engine family behind a Peewee database; one instance per database (``engine_for``)."""

    name: ClassVar[str]  # the protocol family: postgres, mysql, sqlite
    database_class: ClassVar[type[peewee.Database]]  # the peewee class that speaks it
    flavours: ClassVar[tuple[Flavour, ...]]  # the first is the default when the server is not asked
    # The DB-API placeholder of the driver is %s, so a literal % in raw SQL must be doubled.
    pyformat: ClassVar[bool] = True
    # How the migration lock waits: the seconds of one attempt (0: a non-blocking try, polled with backoff).
    lock_wait_step: ClassVar[float] = 0.0
    lock_poll_first: ClassVar[float] = 0.02
    lock_poll_max: ClassVar[float] = 0.5
    # What a user runs to end a stuck session, named in lock timeout errors.
    terminate_hint: ClassVar[str] = ""
    # The connect parameter naming the client session (application_name, program_name) and its length limit.
    app_name_param: ClassVar[str | None] = None
    app_name_limit: ClassVar[int] = 63
    # The OpenTelemetry ``db.system`` value, and how the migration lock is taken (``api_db.lock.strategy``).
    otel_system: ClassVar[str] = "other_sql"
    lock_strategy: ClassVar[str] = ""
    # An upsert names the unique key it may meet (ON CONFLICT (...)); MySQL takes any (ON DUPLICATE KEY).
    upsert_names_key: ClassVar[bool] = True

    def __init__(self, database: peewee.Database) -> None:
        self.database = database

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.database.database!r}>"

    # -- facts -------------------------------------------------------------------

    @classmethod
    def flavour_named(cls, name: str) -> Flavour | None:
        return next((f for f in cls.flavours if f.name == name), None)

    @classmethod
    def transactional_ddl(cls) -> bool:
        """Whether DDL rolls back with its transaction: the ``transactional_ddl`` flag of every flavour."""
        return all(bool(f.capabilities["transactional_ddl"]) for f in cls.flavours)

    def read_server_info(self) -> ServerInfo:
        """The server's identity, read through the database (opens a connection if needed)."""
        raise NotImplementedError

    def scalar(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.database.execute_sql(sql, params).fetchone()
        return row[0] if row else None

    def isolation_level(self) -> str:
        """The isolation level of this thread's transaction, lower case (may cost a round trip)."""
        return "unknown"

    # -- the migration lock ------------------------------------------------------------

    def try_lock(self, conn: Any, wait: float) -> bool:
        """Try to take the session lock on ``conn``, waiting up to ``wait`` seconds where the engine can."""
        raise NotImplementedError

    def unlock(self, conn: Any) -> tuple[bool, str]:
        """Release the session lock on ``conn``: (released, the statement that said so)."""
        raise NotImplementedError

    def read_lock_holder(self) -> dict[str, Any]:
        """Who holds the migration lock now (pid, application, host...); empty when nobody or unknown."""
        return {}

    def lock_holder(self) -> dict[str, Any]:
        """``read_lock_holder``, best effort: a failure to read it is logged and answers empty."""
        from api.db.error_handler import classify_error

        try:
            return self.read_lock_holder()
        except peewee.DatabaseError as exc:  # the timeout error is raised anyway
            logger.warning(
                "could not read the migration lock holder: %s", classify_error(exc, self.name).message
            )
        return {}

    def lock_label(self) -> str:
        """How the lock is named in log lines: ``pg_advisory_lock 123``, ``GET_LOCK name``."""
        return self.name

    def after_lock(self, conn: Any) -> bool:
        """Session settings for the lock holder; True when ``before_unlock`` must undo them."""
        return False

    def before_unlock(self, conn: Any) -> None:
        """Undo what ``after_lock`` set, before the connection goes back to the pool."""

    def lock_session(self, conn: Any, timeout: float) -> bool:
        """Take the session lock on ``conn`` within ``timeout`` s; True when settings need undoing."""
        self._acquire(conn, timeout)
        logger.debug("migration lock taken (%s)", self.lock_label())
        return self.after_lock(conn)

    def unlock_session(self, conn: Any, changed: bool) -> None:
        """Undo ``after_lock`` and release on ``conn``; MigrationLockLost when the lock was not held."""
        if changed:
            self.before_unlock(conn)
        self._release(conn)

    def _acquire(self, conn: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = self.lock_poll_first
        logged = False
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            step = min(remaining, self.lock_wait_step)
            if self.try_lock(conn, step):
                return
            if time.monotonic() >= deadline or (self.lock_wait_step and remaining <= step):
                raise self.lock_timeout_error(timeout, self.lock_holder())
            if not logged or self.lock_wait_step:
                logger.info(
                    "waiting for the migration lock, held by %s", describe_holder(self.lock_holder()),
                    extra={"event": "lock_wait", "engine": self.name, "lock_strategy": self.lock_strategy},
                )  # fmt: skip
                logged = True
            if not self.lock_wait_step:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, self.lock_poll_max)

    def _release(self, conn: Any) -> None:
        """Release on ``conn``, the connection that took the lock; not held then is MigrationLockLost."""
        from api.db.error_handler import classify_error

        try:
            released, statement = self.unlock(conn)
        except Exception as exc:  # the session is gone, its lock with it: it may have been taken meanwhile
            info = classify_error(exc, self.name)
            raise MigrationLockLost(
                f"the session that held the migration lock ({self.lock_label()}) is gone "
                f"({info.category.value}: {info.message}); another instance may have taken the lock",
                strategy="advisory",
            ) from exc
        if not released:
            raise MigrationLockLost(
                f"the migration lock ({self.lock_label()}) was not held at release ({statement} returned "
                f"{released})", strategy="advisory",
            )  # fmt: skip
        logger.debug("migration lock released", extra={"event": "lock_released", "engine": self.name})

    # -- the migration lock: which strategy fits this session (see migrate/lock.py) -------------

    # The statement that reads the server's id of this session; empty: the engine has no session lock.
    backend_id_sql: ClassVar[str] = ""

    def driver_backend_id(self, conn: Any) -> Any:
        """The session id the driver got when it connected (a pooler's fake one behind PgBouncer)."""
        return None

    def pin_problem(self, conn: Any) -> str | None:
        """Why ``conn`` is not pinned to one server session (advisory lock unsafe); None when it is."""
        if not self.backend_id_sql:
            return f"{self.name} has no session lock"
        try:
            driver = self.driver_backend_id(conn)
            first, second = self._backend_id(conn), self._backend_id(conn)
        except Exception as exc:  # a driver or server that cannot say: not provably pinned
            return f"the session id could not be read ({type(exc).__name__})"
        if first != second:
            return "backend id changed across transactions (a transaction pooler?)"
        if driver != first:
            return (
                f"the driver's backend id ({driver}) is not the server's ({first}): a pooler such as "
                "PgBouncer is in between"
            )
        return self.cluster_problem(conn)

    def _backend_id(self, conn: Any) -> Any:
        """The server's id of the session, read in a transaction of its own (autocommit)."""
        with contextlib.closing(conn.cursor()) as cur:
            value = scalar(cur, self.backend_id_sql)
        if not getattr(conn, "autocommit", True) and hasattr(conn, "commit"):
            conn.commit()
        return value

    def cluster_problem(self, conn: Any) -> str | None:
        """A cluster on which the session lock is node-local (Galera); None when there is none."""
        return None

    # -- the migration lock: the lease's SQL (see migrate/lease.py) ---------------------------------

    # The server clock as epoch seconds (a float): all lease times come from the server.
    lease_now_sql: ClassVar[str] = ""
    # What a lock timeout says when the lease row could not even be read or written (the file stayed locked).
    lease_busy_text: ClassVar[str] = ""

    def lease_database(self) -> peewee.Database | None:
        """An unpooled copy of this database for the lease heartbeat; None when no second one can exist."""
        params: dict[str, Any] = dict(getattr(self.database, "connect_params", {}) or {})
        return self.database_class(self.database.database, thread_safe=False, **params)

    def renewal_blocked(self, conn: Any) -> bool:
        """Whether a busy heartbeat means the holder's own ``conn`` has the write lock (so no takeover)."""
        return False

    def migration_transaction(self) -> Any:
        """The transaction (or savepoint) a group of transactional migrations runs in."""
        return self.database.atomic()

    def lock_timeout_error(self, timeout: float, holder: Mapping[str, Any]) -> MigrationLockTimeout:
        return MigrationLockTimeout(
            f"the migration lock was not free within {timeout:g} s; held by {describe_holder(holder)}. "
            f"Another instance is probably migrating: wait for it, or, if that session is stuck, end it "
            f"({self.terminate_hint}) and boot again",
            holder=dict(holder),
        )

    # -- migrations: the session behind a run, read-only targets -------------------------

    # What a user does when this engine's target refuses writes, named in ReadOnlyDatabase.
    read_only_advice: ClassVar[str] = "point the application at a writable database"

    def session_id(self, conn: Any) -> str:
        """``session:<id>`` of the DB-API connection ``conn``, as the driver knows it (no round trip)."""
        return f"session:{id(conn):x}"

    def session_closed(self, conn: Any) -> bool:
        """Whether the driver knows the DB-API connection ``conn`` is closed or lost (no round trip)."""
        return False

    def read_only_reason(self) -> str | None:
        """Why this database refuses writes (a standby, read-only setting or file); None: writable."""
        return None

    # -- previews (statement analysis) ----------------------------------------------------

    # The statement that opens a preview's transaction (always rolled back), read-only where possible.
    preview_begin: ClassVar[str] = "START TRANSACTION READ ONLY"
    # What a preview advises about an index build that blocks writes on a large table.
    index_build_advice: ClassVar[str] = "schedule it when writes can wait"
    # Column types that need an extension: type -> (extension, what to call it); empty without extensions.
    column_type_extensions: ClassVar[Mapping[str, tuple[str, str]]] = {}

    @classmethod
    def statement_lock(cls, kind: str, pg_lock: str, rewrites: bool) -> tuple[str, bool, bool]:
        """(lock, blocks writes, rewrites) here of a statement that takes ``pg_lock`` on PostgreSQL."""
        raise NotImplementedError

    @classmethod
    def index_build(cls, concurrent: bool, text: str) -> tuple[str, bool, bool, bool]:
        """(lock, blocks writes, rewrites, concurrent) of the CREATE INDEX ``text``."""
        raise NotImplementedError

    @classmethod
    def drop_index(cls, concurrent: bool) -> tuple[str, bool, bool]:
        """(lock, blocks writes, rewrites) of a DROP INDEX."""
        raise NotImplementedError

    @classmethod
    def alter_effect(cls, table: str, rest: str, flavour: str, version: tuple[int, ...]) -> StatementEffect:
        """What ``ALTER TABLE <table> <rest>`` does on ``flavour`` at ``version``."""
        raise NotImplementedError

    @contextlib.contextmanager
    def read_only_session(self, cursor: Any) -> Iterator[None]:
        """Session settings that refuse writes for the block, beyond a read-only transaction."""
        yield

    def table_size(self, table: str) -> tuple[int, int] | None:
        """(rows, bytes) of ``table`` from the catalog; None when it does not exist."""
        raise NotImplementedError

    # Catalog queries for schema objects other than tables, columns and indexes (which peewee's
    # introspection reads), by kind: SQL taking (name, schema), answering a row when it exists.
    catalog_objects: ClassVar[dict[str, str]] = {}

    def schema_object_exists(self, kind: str, name: str, schema: str | None = None) -> bool | None:
        """Does a ``kind`` (view, function, trigger...) called ``name`` exist? None: cannot tell."""
        sql = self.catalog_objects.get(kind)
        if sql is None:
            return None
        return self.database.execute_sql(sql, (name, schema)).fetchone() is not None

    def rewrites_table(self, text: str, table: str) -> bool:
        """Whether a statement that the analysis says rewrites ``table`` does, after asking the catalog."""
        return True

    # -- schema (lock-safe DDL, literals, field checks, verify) ------------------------------

    # Literals: how TRUE and FALSE are written, whether \ escapes inside '...' (MySQL without
    # NO_BACKSLASH_ESCAPES), whether a DATETIME column keeps a time zone.
    literal_booleans: ClassVar[tuple[str, str]] = ("0", "1")
    literal_backslash_escapes: ClassVar[bool] = False
    literal_keeps_timezone: ClassVar[bool] = False
    # flavour -> column types whose DEFAULT must be an expression ``(...)``, and from which version it can be.
    expression_default_types: ClassVar[Mapping[str, frozenset[str]]] = {}
    expression_default_since: ClassVar[tuple[int, ...]] = (0,)
    # Lock-safe DDL: dropping a column default rewrites the table (SQLite rebuilds it).
    drop_default_rebuilds_table: ClassVar[bool] = False
    # A failed statement aborts the caller's transaction (PostgreSQL): lookups run in a savepoint.
    failed_statement_aborts_transaction: ClassVar[bool] = False
    # What a DDL lock timeout says when no blocking session is visible: (blocked by, advice).
    no_blocker_texts: ClassVar[tuple[str, str]] = (
        "no blocking session was visible any more",
        "retry the migration",
    )
    # Field checks: identifiers measured in bytes (else characters), and what an over-long one does.
    identifier_limit_in_bytes: ClassVar[bool] = False
    identifier_too_long_consequence: ClassVar[str] = "{title} refuses it"
    # Bytes one character takes in an index key for the key-limit check; None: no check.
    index_key_bytes_per_char: ClassVar[int | None] = None
    # flavour -> what an index key over the limit does / what an index on a TEXT/BLOB column does.
    key_limit_consequence: ClassVar[Mapping[str, str]] = {}
    text_index_consequence: ClassVar[Mapping[str, str]] = {}
    # playhouse modules whose fields exist only on this engine.
    field_modules: ClassVar[tuple[str, ...]] = ()
    # Column types outside peewee's tables (native type -> this engine's type), for get_equivalent_type.
    native_equivalents: ClassVar[Mapping[str, str]] = {}
    # Schema verification: type family -> the families this engine stores it as, besides itself.
    equivalent_families: ClassVar[Mapping[str, frozenset[str]]] = {}
    # PostgreSQL extensions (pgvector) can exist here.
    has_extensions: ClassVar[bool] = False

    @classmethod
    def structured_default_text(cls, fld: peewee.Field, value: Any) -> str | None:
        """``value`` in the input syntax of a structured column type (JSON, array...); None: not one here."""
        return None

    @classmethod
    def literal_bytes(cls, hexed: str) -> str:
        """A byte string, given as hex digits, as a SQL literal."""
        return f"X'{hexed}'"

    @classmethod
    def column_types(cls) -> dict[str, str]:
        """peewee's type key -> this engine's column type, from peewee's own tables."""
        return {**PEEWEE_BASE_TYPES, **cls.database_class.field_types}

    def column_type_sql(self, table: str, column: str) -> str | None:
        """The column's full type as DDL spells it (``varchar(20)``), from the catalog; None: no column."""
        for meta in self.database.get_columns(table):
            if meta.name == column:
                return str(meta.data_type)
        return None

    def column_default_sql(self, table: str, column: str) -> str | None:
        """The column's default as SQL (``'x'::character varying``) from the catalog, or None."""
        for meta in self.database.get_columns(table):
            if meta.name == column:
                return None if meta.default is None else str(meta.default)
        return None

    def backslash_escapes(self) -> bool:
        """Whether the session reads \\ as an escape inside string literals."""
        return self.literal_backslash_escapes

    def end_session_hint(self, session_id: int) -> str:
        """`` (... ends it)``: the statement that ends a blocking session, for DDL lock timeout errors."""
        return ""

    def blocker_queries(self, table: str | None, schema: str | None) -> list[tuple[str, tuple[Any, ...]]]:
        """The queries listing sessions that may block DDL on ``table``; the first non-empty answer wins."""
        return []


    # -- authoring (rehearse) ----------------------------------------------------------------

    # The privilege creating a scratch database needs, named when it is missing.
    scratch_privilege: ClassVar[str] = ""

    def scratch_name(self, token: str) -> str:
        """The name (a path on SQLite) of a rehearsal's scratch database beside this one."""
        raise NotImplementedError

    def scratch_create_sql(self, name: str) -> str:
        """The statement that creates the empty scratch database ``name``."""
        raise NotImplementedError

    def create_scratch(self, name: str) -> None:
        """Create the empty scratch database ``name`` here; ScratchDatabaseDenied without the privilege."""
        from api.db.error_handler import ErrorCategory, classify_error
        from api.db.exceptions import ScratchDatabaseDenied

        try:
            self.database.execute_sql(self.scratch_create_sql(name))
        except peewee.DatabaseError as exc:
            info = classify_error(exc, self.name)
            if info.category is ErrorCategory.PERMISSION_DENIED:
                raise ScratchDatabaseDenied(
                    f"cannot create the scratch database {name}: {info.message}; the rehearsal needs "
                    f"{self.scratch_privilege}: grant it, or rehearse as a user that has it",
                    privilege=self.scratch_privilege.split()[0], orig=exc,
                ) from exc
            raise

    def open_scratch(self, name: str) -> peewee.Database:
        """An unpooled database on the scratch ``name``, with this database's connection settings."""
        raise NotImplementedError

    def copy_into_scratch(self, scratch: peewee.Database, rows: int, whole: frozenset[str]) -> list[str]:
        """Copy every table's schema, its first ``rows`` rows (all rows of ``whole``); the tables copied."""
        raise NotImplementedError

    def drop_scratch(self, name: str) -> None:
        """Drop the scratch database ``name`` (gone already: nothing to do)."""
        raise NotImplementedError

    def scratch_exists(self, name: str) -> bool:
        """Whether the scratch database ``name`` exists."""
        raise NotImplementedError

    # -- connections, pool and health --------------------------------------------------------

    # URL schemes users write for this engine, and the playhouse.db_url scheme that builds it.
    url_schemes: ClassVar[tuple[str, ...]] = ()
    playhouse_scheme: ClassVar[str] = ""
    driver: ClassVar[str | None] = None  # the DB-API module that must be importable
    extra: ClassVar[str | None] = None  # the pip extra that installs it: api-db[extra]
    networked: ClassVar[bool] = True  # URLs name a host and a database (False: a file path)
    driver_defaults: ClassVar[Mapping[str, Any]] = {}  # connect parameters unless the caller gives them
    has_pgvector: ClassVar[bool] = False  # pgvector can exist here: health and preflight check it
    # The engine's own preflight checks, by name (see api/db/health/preflight.py), in report order.
    preflight_checks: ClassVar[tuple[str, ...]] = ()
    default_port: ClassVar[int | None] = None  # filled in for the hosts of a host list that name none
    # The statement that opens a transaction that must write: it fails at once on a standby (None: BEGIN).
    begin_read_write: ClassVar[str | None] = None
    # libpq understands a host list itself; others get api.db's host-by-host connect.
    driver_host_lists: ClassVar[bool] = False

    @classmethod
    def apply_timeouts(cls, params: dict[str, Any], pool: Any) -> None:
        """Connect / statement timeouts and the application name as the driver spells them (caller wins)."""

    @classmethod
    def session_app_name(cls, app_name: str) -> str:
        """``app@host:pid`` within the engine's length limit, so each process's sessions can be told apart."""
        suffix = f"@{socket.gethostname()}:{os.getpid()}"
        room = max(0, cls.app_name_limit - len(suffix))
        return (app_name[:room] + suffix)[-cls.app_name_limit:]

    @classmethod
    def name_session(cls, params: dict[str, Any], app_name: str) -> None:
        """Set the session name parameter to :meth:`session_app_name` (the caller's own value wins)."""
        if cls.app_name_param is not None:
            params.setdefault(cls.app_name_param, cls.session_app_name(app_name))

    @classmethod
    def connection_fileno(cls, conn: Any) -> int | None:
        """The socket file descriptor of a driver connection (None: none, or closed)."""
        return None

    def probe_database(
        self, params: dict[str, Any], *, connect_timeout: int, statement_timeout: float, io_timeout: float
    ) -> peewee.Database | None:
        """An unpooled copy of this database with the probe's short timeouts (None: probe this one)."""
        raise NotImplementedError

    def server_facts(self) -> ServerFacts:
        """Connection limits, inherited timeouts and settings that preflight reports."""
        return ServerFacts()

    # -- clusters: roles, lag, poolers -----------------------------------------------------

    def read_role(self, cursor: Any) -> MemberRole:
        """This member's role, read on a DB-API ``cursor`` (one or two round trips)."""
        return MemberRole("standalone")

    @classmethod
    def unanswered(cls, exc: BaseException) -> bool:
        """Whether a lost connection's error says the server closed it without answering the statement."""
        return False

    @classmethod
    def pooler_refusal(cls, exc: BaseException) -> bool:
        """Whether ``exc`` is a connection pooler refusing a startup setting it cannot carry."""
        return False

    @classmethod
    def drop_pooled_startup_options(cls, params: dict[str, Any]) -> bool:
        """Remove the startup settings a transaction pooler refuses; True when something was removed."""
        return False

    @classmethod
    def transaction_settings(cls, pool: Any) -> str:
        """Settings a pooled transaction sets for itself (``SET LOCAL ...``); empty when none."""
        return ""

    def backend_id(self, cursor: Any) -> Any:
        """The server's id of the session behind ``cursor`` (it changes under a transaction pooler)."""
        return None

    @classmethod
    def product_label(cls, flavour: str) -> str:
        """How preflight names the server product in a sentence."""
        return flavour
