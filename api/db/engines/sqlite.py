"""SQLite: everything api.db knows about it, as data and as the calls that read it."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, ClassVar

import peewee

from api.db.engines.base import Engine, Flavour, ServerFacts
from api.db.engines.info import ServerInfo, parse_version
from api.db.engines.postgres import PostgresEngine
from api.db.engines.statements import BYTES_PER_ROW_GUESS, REWRITE, StatementEffect

logger = logging.getLogger(__name__)

SQLITE = Flavour(
    "sqlite",
    "SQLite",
    {
        "full_text_search": True,  # FTS5 virtual tables (compiled into Python's sqlite3 builds)
        "json_functions": True,  # built in from 3.38 (JSON1 extension before)
        "auto_increment": True,  # INTEGER PRIMARY KEY AUTOINCREMENT
        "sequence_support": False,
        "type_casting": "limited",  # CAST to storage classes; types are affinities
        "max_varchar": None,  # VARCHAR(n) is TEXT; n is not enforced
        "transactional_ddl": True,
        "advisory_locks": False,  # a single writer at a time is the only lock
        "add_column_if_not_exists": False,
        "instant_add_column": True,  # ADD COLUMN only edits the schema text; rows are never touched
        "concurrent_index": False,  # CREATE INDEX holds the write lock of the whole file
        "lock_timeout_setting": "busy_timeout",  # PRAGMA busy_timeout, milliseconds, per connection
        "max_identifier_length": None,
        "max_index_key_bytes": None,
        "native_json_type": False,  # JSON is TEXT (JSONB blobs from 3.45 are still BLOB columns)
        "partial_indexes": True,  # 3.8.0+
        "check_constraints": True,
        "vector_type": False,
    },
    version_gates={
        "partial_indexes": ((3, 8, 0), False),
        "json_functions": ((3, 38), False),
    },
    min_version=(3, 25),
)


# -- schema: column types outside peewee's tables, as SQLite spells them (get_equivalent_type).
SQLITE_NATIVE_EQUIVALENTS: dict[str, str] = {
    "JSONB": "TEXT", "JSON": "TEXT", "TIMESTAMPTZ": "DATETIME", "LONGTEXT": "TEXT", "MEDIUMTEXT": "TEXT",
    "LONGBLOB": "BLOB", "TINYINT(1)": "INTEGER", "INTEGER": "INTEGER", "VECTOR": "BLOB",
}
# -- migrations: URI parameters that open a file read-only.
SQLITE_READ_ONLY_URI = re.compile(r"[?&](?:mode=ro|immutable=1)(?:&|$)", re.IGNORECASE)


def installed_by_process() -> str:
    """``host:pid``: SQLite has no server session, the process is the session."""
    return f"{socket.gethostname()}:{os.getpid()}"


def sqlite_file_read_only(database: str) -> str | None:
    """Why the file behind ``database`` (a path or a ``file:`` URI) cannot be written; None when it can."""
    flag = SQLITE_READ_ONLY_URI.search(database) if database.startswith("file:") else None
    if flag is not None:
        return f"the file is opened read-only ({flag.group(0).strip('?&')})"
    path = database[len("file:"):].split("?", 1)[0] if database.startswith("file:") else database
    if path in ("", ":memory:") or not os.path.exists(path):
        return None
    if not os.access(path, os.W_OK):
        return f"the file {path} is not writable by this process"
    return None


# -- previews (statement analysis): every write takes the database-wide write lock ----------
SQLITE_LOCK = "database write lock"


class SqliteEngine(Engine):
    """SQLite through the standard library's sqlite3."""

    name = "sqlite"
    database_class = peewee.SqliteDatabase
    otel_system = "sqlite"
    lock_strategy = "begin_immediate"
    flavours = (SQLITE,)
    pyformat = False  # the sqlite3 placeholder is ?

    def isolation_level(self) -> str:
        """SQLite transactions are serializable (no round trip)."""
        return "serializable"

    def read_server_info(self) -> ServerInfo:
        text = sqlite3.sqlite_version
        return ServerInfo(self.name, "sqlite", parse_version(text), text, str(self.database.database))

    # -- the migration lock: the lease, a row in the file (writes serialized by SQLite itself) ----------

    lease_now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    lease_busy_text = (
        "the SQLite database {database} stayed locked by another writer for {timeout:g} s (SQLite does "
        "not say which process); find the process that holds a write transaction on that file and boot again"
    )
    lease_heartbeat_busy_timeout = 1.0  # seconds the heartbeat waits for the file's write lock

    def lease_database(self) -> peewee.Database | None:
        database = self.database
        if database.database == ":memory:":
            return None  # a second connection would see another, empty database
        return peewee.SqliteDatabase(database.database, thread_safe=False, check_same_thread=False,
                                     timeout=self.lease_heartbeat_busy_timeout)  # fmt: skip

    def renewal_blocked(self, conn: Any) -> bool:
        # The holder's migration transactions begin IMMEDIATE: while one is open it has the file's write
        # lock, the heartbeat's renewal waits, and nobody else can commit a takeover either.
        return bool(getattr(conn, "in_transaction", False))

    def migration_transaction(self) -> Any:
        # IMMEDIATE: the write lock from the start, so that a read followed by a write inside the
        # migration never meets another writer (the lease heartbeat, a booter) in between.
        return self.database.atomic(lock_type="IMMEDIATE")

    # -- migrations: read-only targets ----------------------------------------------------

    read_only_advice = (
        "open the file read-write (no mode=ro or immutable=1 in its URI, PRAGMA query_only = OFF) "
        "and give this process write access to the file and its directory"
    )

    def session_id(self, conn: Any) -> str:
        return f"session:{installed_by_process()}"

    def read_only_reason(self) -> str | None:
        if int(self.scalar("PRAGMA query_only")):
            return "PRAGMA query_only is on"
        return sqlite_file_read_only(str(self.database.database))

    # -- previews (statement analysis) ----------------------------------------------------

    preview_begin = "BEGIN"

    @classmethod
    def statement_lock(cls, kind: str, pg_lock: str, rewrites: bool) -> tuple[str, bool, bool]:
        return SQLITE_LOCK, True, rewrites

    @classmethod
    def index_build(cls, concurrent: bool, text: str) -> tuple[str, bool, bool, bool]:
        return SQLITE_LOCK, True, False, False

    @classmethod
    def drop_index(cls, concurrent: bool) -> tuple[str, bool, bool]:
        return SQLITE_LOCK, True, False

    @classmethod
    def alter_effect(cls, table: str, rest: str, flavour: str, version: tuple[int, ...]) -> StatementEffect:
        """PostgreSQL's forms under the one database-wide lock; dropping a column rewrites every row."""
        effect = PostgresEngine.alter_effect(table, rest, flavour, version)
        rewrites = effect.breaking == "drop_column"
        kind = REWRITE if rewrites else effect.kind
        return replace(effect, kind=kind, lock=SQLITE_LOCK, blocks_writes=True, rewrites_table=rewrites)

    @contextlib.contextmanager
    def read_only_session(self, cursor: Any) -> Iterator[None]:
        """``PRAGMA query_only`` for the block, then back to what it was."""
        previous = int(cursor.execute("PRAGMA query_only").fetchone()[0])
        cursor.execute("PRAGMA query_only = ON")
        try:
            yield
        finally:
            self.database.cursor().execute(f"PRAGMA query_only = {previous}")

    catalog_objects: ClassVar[dict[str, str]] = {
        # one database per file: the schema parameter is only there to fill the placeholder
        "view": "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ? AND (? IS NULL OR 1)",
        "trigger": "SELECT 1 FROM sqlite_master WHERE type = 'trigger' AND name = ? AND (? IS NULL OR 1)",
    }

    def table_size(self, table: str) -> tuple[int, int] | None:
        from api.db.error_handler import classify_error

        database = self.database
        if table not in database.get_tables():
            return None
        quoted = '"' + table.replace('"', '""') + '"'
        count = int(database.execute_sql(f"SELECT count(*) FROM {quoted}").fetchone()[0])  # no row count kept
        try:
            row = database.execute_sql("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (table,)).fetchone()
            size = row[0]
        except peewee.DatabaseError as exc:  # dbstat is a compile-time option of SQLite
            logger.debug("no dbstat on this SQLite: %s", classify_error(exc, self.name).message)
            size = None
        return count, int(size or count * BYTES_PER_ROW_GUESS)

    # -- schema (lock-safe DDL, literals, field checks, verify) ------------------------------

    drop_default_rebuilds_table = True
    no_blocker_texts = (
        "SQLite does not report which connection holds its lock",
        "find the process with a long write transaction on this file",
    )
    field_modules = ("playhouse.sqlite_ext",)
    native_equivalents = SQLITE_NATIVE_EQUIVALENTS
    equivalent_families = {
        "integer": frozenset({"bigint"}),  # one INTEGER affinity, both ways
        "boolean": frozenset({"integer"}),
        "uuid": frozenset({"char", "text"}),
        "bigint": frozenset({"integer"}),
        "decimal": frozenset({"decimal", "float"}),
    }


    # -- authoring (rehearse) ----------------------------------------------------------------

    scratch_privilege = "write permission on the database file's directory"

    def scratch_name(self, token: str) -> str:
        from api.db.exceptions import ConfigurationError

        path = str(self.database.database)
        if path in ("", ":memory:") or path.startswith("file::memory:"):
            raise ConfigurationError(
                "an in-memory SQLite database cannot be rehearsed: it has no file to copy"
            )
        return f"{path}.rehearse-{token}"

    def create_scratch(self, name: str) -> None:
        import os

        from api.db.exceptions import ScratchDatabaseDenied

        directory = os.path.dirname(os.path.abspath(name))
        if not os.access(directory, os.W_OK):
            raise ScratchDatabaseDenied(
                f"cannot create the scratch database {name}: the rehearsal needs {self.scratch_privilege} "
                f"({directory}): grant it, or rehearse as a user that has it",
                privilege="write on directory",
            )
        sqlite3.connect(name).close()

    def open_scratch(self, name: str) -> peewee.Database:
        return peewee.SqliteDatabase(
            name, thread_safe=False, pragmas=dict(getattr(self.database, "_pragmas", ()))
        )

    def copy_into_scratch(self, scratch: peewee.Database, rows: int, whole: frozenset[str]) -> list[str]:
        """The online backup API copies the file; then each table keeps its first ``rows`` rows."""
        tables = sorted(self.database.get_tables())
        scratch.connect(reuse_if_open=True)
        try:
            self.database.connection().backup(scratch.connection())
            scratch.execute_sql("PRAGMA foreign_keys = OFF")  # partial rows; this connection only
            for table in tables:
                if table not in whole and not table.startswith("sqlite_"):
                    quoted = '"' + table.replace('"', '""') + '"'
                    scratch.execute_sql(
                        f"DELETE FROM {quoted} WHERE rowid NOT IN "
                        f"(SELECT rowid FROM {quoted} LIMIT {int(rows)})"
                    )
        finally:
            scratch.close()
        return tables

    def drop_scratch(self, name: str) -> None:
        import os

        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(name + suffix)

    def scratch_exists(self, name: str) -> bool:
        import os

        return os.path.exists(name)

    # -- connections, pool and health --------------------------------------------------------

    url_schemes = ("sqlite",)
    playhouse_scheme = "sqlite"
    networked = False
    preflight_checks = ("journal_mode", "pgvector_elsewhere")

    def probe_database(
        self, params: dict[str, Any], *, connect_timeout: int, statement_timeout: float, io_timeout: float
    ) -> peewee.Database | None:
        database = self.database
        if database.database == ":memory:":
            return None  # a second connection would see another, empty database
        params.pop("check_same_thread", None)
        return peewee.SqliteDatabase(database.database, thread_safe=False, timeout=statement_timeout,
                                     check_same_thread=False, **params)  # fmt: skip

    def server_facts(self) -> ServerFacts:
        pragmas = ("journal_mode", "foreign_keys", "busy_timeout")
        return ServerFacts(settings={pragma: str(self.scalar(f"PRAGMA {pragma}")) for pragma in pragmas})

    @classmethod
    def product_label(cls, flavour: str) -> str:
        return "SQLite"
