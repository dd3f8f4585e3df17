"""PostgreSQL: everything api.db knows about it, as data and as the SQL that reads it."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import peewee

from api.db.engines.base import LOCK_NAMESPACE, Engine, Flavour, MemberRole, ServerFacts, scalar
from api.db.engines.info import ServerInfo, parse_version
from api.db.engines.statements import (
    ACCESS_EXCLUSIVE,
    INDEX,
    METADATA,
    NAME,
    PG_BLOCKS_WRITES,
    REWRITE,
    SCAN,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    AlterForm,
    StatementEffect,
    match_alter,
    unquote,
)

logger = logging.getLogger(__name__)

# A fixed 64-bit key for pg_advisory_lock, derived from the namespace.
PG_LOCK_KEY = int.from_bytes(hashlib.sha256(LOCK_NAMESPACE.encode()).digest()[:8], "big", signed=True)
# PostgreSQL 14+: while this session holds the lock, let the server notice within a
# second that the client died (SIGKILL, node lost) even in the middle of a long
# statement, instead of holding the lock until that statement ends. Reset before the
# connection goes back to the pool.
DEAD_CLIENT_CHECK = "1s"

POSTGRES = Flavour(
    "postgres",
    "PostgreSQL",
    {
        "full_text_search": True,  # tsvector / tsquery, GIN indexes
        "json_functions": True,  # json/jsonb operators and functions
        "auto_increment": False,  # SERIAL / IDENTITY columns backed by sequences instead
        "sequence_support": True,
        "type_casting": "full",  # value::type, and ALTER COLUMN ... TYPE ... USING expr
        "max_varchar": 10485760,  # VARCHAR(n) limit; TEXT is unlimited
        "transactional_ddl": True,  # almost all DDL rolls back (not CREATE INDEX CONCURRENTLY)
        "advisory_locks": True,  # pg_advisory_lock / pg_try_advisory_lock
        "add_column_if_not_exists": True,  # 9.6+
        "instant_add_column": True,  # 11+: a non-volatile DEFAULT is stored once (attmissingval)
        "concurrent_index": True,  # CREATE INDEX CONCURRENTLY, outside a transaction only
        "lock_timeout_setting": "lock_timeout",  # milliseconds; SET LOCAL scopes it to a transaction
        "max_identifier_length": 63,  # NAMEDATALEN - 1 bytes; longer names are truncated with a NOTICE
        "max_index_key_bytes": 2704,  # B-tree entry limit on 8 kB pages; checked per row, at write time
        "native_json_type": True,  # jsonb
        "partial_indexes": True,
        "check_constraints": True,
        "vector_type": True,  # only with the pgvector extension: see EXTENSION_GATES
    },
    version_gates={
        "add_column_if_not_exists": ((9, 6), False),
        "instant_add_column": ((11,), False),
        "native_json_type": ((9, 4), False),
    },
    extension_gates={"vector_type": "vector"},
    min_version=(12,),
)


def pg_key_parts(key: int) -> tuple[int, int]:
    """pg_locks shows a bigint advisory key as classid (high 32 bits) and objid (low 32 bits)."""
    unsigned = key & 0xFFFFFFFFFFFFFFFF
    return unsigned >> 32, unsigned & 0xFFFFFFFF


# -- migrations: why a target refuses writes, one round trip (the reasons in the columns' order).
PG_READ_ONLY = (
    "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only'), "
    "current_setting('transaction_read_only')"
)
PG_READ_ONLY_REASONS = (
    "the server is a standby (pg_is_in_recovery() is true)",
    "default_transaction_read_only is on",
    "transaction_read_only is on",
)
# -- schema: the sessions that may block DDL (granted locks on the table, else open transactions).
PG_TABLE_HOLDERS = """
SELECT a.pid, a.query, coalesce(a.state, ''),
       EXTRACT(EPOCH FROM (clock_timestamp() - coalesce(a.xact_start, a.query_start)))::float8,
       string_agg(DISTINCT l.mode, ', '), coalesce(a.usename::text, ''), coalesce(a.application_name, '')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.granted AND l.locktype = 'relation' AND l.relation = to_regclass(%s)
  AND l.pid <> pg_backend_pid()
GROUP BY a.pid, a.query, a.state, a.xact_start, a.query_start, a.usename, a.application_name
ORDER BY 4 DESC NULLS LAST
"""

PG_OPEN_TRANSACTIONS = """
SELECT a.pid, a.query, coalesce(a.state, ''),
       EXTRACT(EPOCH FROM (clock_timestamp() - a.xact_start))::float8,
       '', coalesce(a.usename::text, ''), coalesce(a.application_name, '')
FROM pg_stat_activity a
WHERE a.datname = current_database() AND a.xact_start IS NOT NULL AND a.pid <> pg_backend_pid()
  AND a.backend_type = 'client backend'
ORDER BY a.xact_start
LIMIT 10
"""

# -- schema: column types outside peewee's tables, as PostgreSQL spells them (get_equivalent_type).
PG_NATIVE_EQUIVALENTS: dict[str, str] = {
    "JSONB": "JSONB", "JSON": "JSONB", "TIMESTAMPTZ": "TIMESTAMPTZ", "LONGTEXT": "TEXT", "MEDIUMTEXT": "TEXT",
    "LONGBLOB": "BYTEA", "TINYINT(1)": "BOOLEAN", "INTEGER": "INTEGER", "VECTOR": "VECTOR",
}
# -- connections, pool and health: TCP keepalives, so a PostgreSQL call on a dead network fails
# within about a minute instead of waiting forever (libpq ignores them on Unix sockets).
POSTGRES_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}  # fmt: skip
# -- clusters: a standby's replay lag in seconds (0 when everything received is replayed, so an
# idle primary does not make its replicas look late); PgBouncer's refusal of startup options.
PG_ROLE_SQL = (
    "SELECT pg_is_in_recovery(), CASE WHEN NOT pg_is_in_recovery() THEN 0 "
    "WHEN pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 "
    "ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) END"
)
PG_POOLER_REFUSAL = re.compile(r"unsupported startup parameter", re.IGNORECASE)
# libpq's words for a connection closed with no message at all. A backend that is terminated (fast
# shutdown, pg_terminate_backend) while it runs a statement sends FATAL 57P01 first, even after a
# commit; one that sees its postmaster die finishes the statement and answers; a crash mid-statement
# loses its uncommitted work. A silent close therefore means the statement was never read (the residual
# case, a crash between the commit record and the reply, is why resend_unanswered can be turned off).
PG_UNANSWERED = re.compile(r"^server closed the connection unexpectedly", re.IGNORECASE)
PG_STARTUP_ONLY = ("statement_timeout",)  # what api.db sends as -c options at connect
# -- previews (statement analysis) --------------------------------------------------------
# ALTER TABLE forms, first match wins ("Explicit Locking", and ALTER TABLE's notes on which
# forms rewrite the table or scan it). (pattern, kind, lock, blocks writes, rewrites, operation).
_AE = ACCESS_EXCLUSIVE
PG_ALTER_FORMS: tuple[AlterForm, ...] = (
    AlterForm(r"RENAME\s+TO\b", METADATA, _AE, True, False, "rename_table", "rename_table",
              names=r"\S+\s+\S+\s+(.*)"),
    AlterForm(r"RENAME\s+CONSTRAINT\b", METADATA, _AE, True, False, "rename_constraint"),
    AlterForm(r"RENAME\b", METADATA, _AE, True, False, "rename_column", "rename_column",
              names=rf"RENAME\s+(?:COLUMN\s+)?{NAME}\s+TO\s+{NAME}"),
    AlterForm(r"DROP\s+(?:COLUMN\b|(?!CONSTRAINT\b|DEFAULT\b)\w)", METADATA, _AE, True, False, "drop_column",
              "drop_column"),
    AlterForm(r"DROP\s+CONSTRAINT\b", METADATA, _AE, True, False, "drop_constraint"),
    AlterForm(r"\bVALIDATE\s+CONSTRAINT\b", SCAN, SHARE_UPDATE_EXCLUSIVE, False, False, "validate_constraint",
              anywhere=True),
    AlterForm(r"(?s)(?=.*NOT VALID)(?=.*\bFOREIGN\s+KEY\b)", METADATA, SHARE_ROW_EXCLUSIVE, True, False,
              "add_foreign_key"),
    AlterForm(r"\bFOREIGN\s+KEY\b", SCAN, SHARE_ROW_EXCLUSIVE, True, False, "add_foreign_key", anywhere=True),
    AlterForm(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?(?:UNIQUE|PRIMARY\s+KEY)\b", INDEX, _AE, True, False,
              "add_unique"),
    AlterForm(r"(?s)(?=.*NOT VALID)ADD\s+(?:CONSTRAINT\s+\S+\s+)?CHECK\b", METADATA, _AE, True, False,
              "add_check"),
    AlterForm(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?CHECK\b", SCAN, _AE, True, False, "add_check"),
    AlterForm(r"\bALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET\s+DATA\s+)?TYPE\b", REWRITE, _AE, True, True,
              "alter_column_type", anywhere=True),
    AlterForm(r"\bSET\s+NOT\s+NULL\b", SCAN, _AE, True, False, "set_not_null", anywhere=True),
    AlterForm(r"\bSET\s+(?:LOGGED|UNLOGGED|TABLESPACE)\b", REWRITE, _AE, True, True, "set_storage",
              anywhere=True),
    AlterForm(r"(?s)ADD\b(?=.*\b(?:PRIMARY\s+KEY|UNIQUE)\b)", INDEX, _AE, True, False, "add_column"),
    # A volatile default is computed per row, so the table is rewritten (11+ stores a constant once).
    AlterForm(r"(?s)ADD\b(?=.*\bDEFAULT\b.*\b(?:RANDOM|GEN_RANDOM_UUID|UUID_GENERATE_V\d|CLOCK_TIMESTAMP|"
              r"NEXTVAL|TIMEOFDAY)\s*\()", REWRITE, _AE, True, True, "add_column"),
    AlterForm(r"ADD\b", METADATA, _AE, True, False, "add_column"),
    AlterForm(r"", METADATA, _AE, True, False, "alter_table"),
)
# Column types that need an extension: type -> (extension, what to call it).
EXTENSION_TYPES: dict[str, tuple[str, str]] = {
    "vector": ("vector", "pgvector"),
    "halfvec": ("vector", "pgvector"),
    "sparsevec": ("vector", "pgvector"),
    "bit_vector": ("vector", "pgvector"),
    "hstore": ("hstore", "hstore"),
    "citext": ("citext", "citext"),
    "ltree": ("ltree", "ltree"),
    "geometry": ("postgis", "PostGIS"),
    "geography": ("postgis", "PostGIS"),
}
PG_ALTER_TYPE = re.compile(
    rf"ALTER\s+TABLE\s+.*?\bALTER\s+(?:COLUMN\s+)?{NAME}\s+(?:SET\s+DATA\s+)?TYPE\s+"
    r"([A-Za-z][\w ]*?)\s*(?:\(\s*(\d+)\s*\))?\s*(USING\b.*|COLLATE\b.*)?;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
PG_VARCHAR = frozenset({"varchar", "character varying"})
PG_ROWS_PER_PAGE_GUESS = 60  # rows of a narrow table in one 8 kB heap page, for tables never analysed


def _pg_quoted(text: str) -> str:
    """A double-quoted element of an array or hstore literal (backslash and quote escaped)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pg_element(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, (list, tuple)):
        return pg_array_text(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime.datetime):
        return _pg_quoted(value.isoformat(sep=" "))
    return _pg_quoted(str(value))


def pg_array_text(values: list[Any] | tuple[Any, ...]) -> str:
    """A Python list in PostgreSQL's array input syntax: ``{"a","b\\"c",NULL}`` (nested lists nest)."""
    return "{" + ",".join(_pg_element(v) for v in values) + "}"


def pg_hstore_text(mapping: dict[Any, Any]) -> str:
    """A dict in hstore's input syntax: ``"k"=>"v", "n"=>NULL``."""
    return ", ".join(
        f"{_pg_quoted(str(k))}=>{'NULL' if v is None else _pg_quoted(str(v))}" for k, v in mapping.items()
    )


class PostgresEngine(Engine):
    """PostgreSQL through psycopg2."""

    name = "postgres"
    database_class = peewee.PostgresqlDatabase
    otel_system = "postgresql"
    lock_strategy = "pg_advisory_lock"
    flavours = (POSTGRES,)
    app_name_param = "application_name"
    app_name_limit = 63  # NAMEDATALEN - 1 bytes
    terminate_hint = "PostgreSQL: SELECT pg_terminate_backend(pid); MySQL: KILL connection_id"

    def isolation_level(self) -> str:
        """``SHOW transaction_isolation`` (the transaction's, once one is open)."""
        return str(self.scalar("SHOW transaction_isolation")).lower()

    def read_server_info(self) -> ServerInfo:
        text = str(self.scalar("SHOW server_version"))
        name = str(self.scalar("SELECT current_database()"))
        installed = dict(self.database.execute_sql("SELECT extname, extversion FROM pg_extension").fetchall())
        available = dict(
            self.database.execute_sql("SELECT name, default_version FROM pg_available_extensions").fetchall()
        )
        return ServerInfo(self.name, "postgres", parse_version(text), text, name, installed, available)

    # -- the migration lock: a session advisory lock, polled ---------------------------

    def try_lock(self, conn: Any, wait: float) -> bool:
        with conn.cursor() as cur:
            return bool(scalar(cur, "SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,)))

    def unlock(self, conn: Any) -> tuple[bool, str]:
        with conn.cursor() as cur:
            return (scalar(cur, "SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,)) == 1,
                    "SELECT pg_advisory_unlock")

    def lock_label(self) -> str:
        return f"pg_advisory_lock {PG_LOCK_KEY}"

    # Pinned when libpq's backend pid (PgBouncer hands out a fake one) is pg_backend_pid() twice.
    backend_id_sql = "SELECT pg_backend_pid()"
    # clock_timestamp(), not now(): the time of the statement, not of its transaction.
    lease_now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::float8"

    def driver_backend_id(self, conn: Any) -> Any:
        return conn.get_backend_pid()

    def read_lock_holder(self) -> dict[str, Any]:
        classid, objid = pg_key_parts(PG_LOCK_KEY)
        cursor = self.database.execute_sql(
            "SELECT a.pid, a.application_name, a.client_addr::text, a.usename, a.backend_start, "
            "a.xact_start, a.state, left(a.query, 200) "
            "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1 "
            "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (classid, objid),
        )
        row = cursor.fetchone()
        if not row:
            return {}
        keys = ("pid", "application_name", "client_addr", "user", "backend_start", "xact_start", "state",
                "query")
        return dict(zip(keys, row))

    def after_lock(self, conn: Any) -> bool:
        from api.db.error_handler import classify_error

        if getattr(conn, "server_version", 0) < 140000:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET client_connection_check_interval = '{DEAD_CLIENT_CHECK}'")
        except Exception as exc:  # an older or restricted server: the lock works without it
            logger.debug(
                "client_connection_check_interval not set: %s", classify_error(exc, self.name).message
            )
            return False
        return True

    def before_unlock(self, conn: Any) -> None:
        from api.db.error_handler import classify_error

        try:
            with conn.cursor() as cur:
                cur.execute("RESET client_connection_check_interval")
        except Exception as exc:  # a dead connection takes its settings with it
            logger.warning(
                "could not reset client_connection_check_interval: %s", classify_error(exc, self.name).message
            )

    # -- migrations: the session behind a run, read-only targets -------------------------

    read_only_advice = (
        "connect to the primary (libpq: target_session_attrs=read-write, or the primary's host), or, on a "
        "database meant to take writes, ALTER DATABASE <name> SET default_transaction_read_only = off"
    )

    def session_id(self, conn: Any) -> str:
        return f"session:{conn.get_backend_pid()}"

    def session_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def read_only_reason(self) -> str | None:
        row = self.database.execute_sql(PG_READ_ONLY).fetchone()
        for value, reason in zip(row, PG_READ_ONLY_REASONS):
            if value in (True, "on"):
                return reason
        return None

    # -- previews (statement analysis) ----------------------------------------------------

    preview_begin = "BEGIN TRANSACTION READ ONLY"
    index_build_advice = "use m.add_index(..., concurrently=True) in a Migration(..., atomic=False)"
    column_type_extensions: ClassVar[Mapping[str, tuple[str, str]]] = EXTENSION_TYPES

    @classmethod
    def statement_lock(cls, kind: str, pg_lock: str, rewrites: bool) -> tuple[str, bool, bool]:
        return pg_lock, pg_lock in PG_BLOCKS_WRITES, rewrites

    @classmethod
    def index_build(cls, concurrent: bool, text: str) -> tuple[str, bool, bool, bool]:
        return (SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE), not concurrent, False, concurrent

    @classmethod
    def drop_index(cls, concurrent: bool) -> tuple[str, bool, bool]:
        return (SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE), not concurrent, False

    @classmethod
    def alter_effect(cls, table: str, rest: str, flavour: str, version: tuple[int, ...]) -> StatementEffect:
        return match_alter(PG_ALTER_FORMS, rest).effect(table)

    catalog_objects: ClassVar[dict[str, str]] = {
        "view": "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s "
        "AND n.nspname = COALESCE(%s, current_schema()) AND c.relkind IN ('v', 'm')",
        # by name: an overload with other argument types counts as the same function
        "function": "SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE p.proname = %s "
        "AND n.nspname = COALESCE(%s, current_schema())",
        "trigger": "SELECT 1 FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE t.tgname = %s AND n.nspname = COALESCE(%s, current_schema()) "
        "AND NOT t.tgisinternal",
        "sequence": "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = %s "
        "AND n.nspname = COALESCE(%s, current_schema()) AND c.relkind = 'S'",
        "type": "SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typname = %s "
        "AND n.nspname = COALESCE(%s, current_schema())",
        "constraint": "SELECT 1 FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace "
        "WHERE k.conname = %s AND n.nspname = COALESCE(%s, current_schema())",
        # database-wide names: the schema parameter only fills its placeholder
        "extension": "SELECT 1 FROM pg_extension WHERE extname = %s AND (%s::text IS NULL OR TRUE)",
        "schema": "SELECT 1 FROM pg_namespace WHERE nspname = %s AND (%s::text IS NULL OR TRUE)",
    }
    catalog_objects["procedure"] = catalog_objects["function"]

    def table_size(self, table: str) -> tuple[int, int] | None:
        row = self.database.execute_sql(
            "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid), c.relpages FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'm')",
            (table,),
        ).fetchone()
        if row is None:
            return None
        rows = int(row[0])
        if rows < 0:  # never analysed (PostgreSQL 14+ says -1): estimate from the heap's pages
            rows = int(row[2]) * PG_ROWS_PER_PAGE_GUESS
        return max(rows, 0), int(row[1])

    def column_type_sql(self, table: str, column: str) -> str | None:
        """``format_type`` of the column: the type with length or precision (``character varying(20)``)."""
        row = self.database.execute_sql(
            "SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = to_regclass(quote_ident(%s)) AND a.attname = %s AND NOT a.attisdropped",
            (table, column),
        ).fetchone()
        return None if row is None else str(row[0])

    def rewrites_table(self, text: str, table: str) -> bool:
        """False for a type change done in the catalog only (VARCHAR(40) to VARCHAR(200))."""
        change = self.type_change(text)
        if change is None or change[3]:
            return True
        column, new_type, new_length, _ = change
        row = self.database.execute_sql(
            "SELECT data_type, character_maximum_length FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s AND column_name = %s",
            (table, column),
        ).fetchone()
        return row is None or not self.binary_coercible(str(row[0]), row[1], new_type, new_length)

    @staticmethod
    def type_change(text: str) -> tuple[str, str, int | None, bool] | None:
        """(column, new type, new length, has USING) of an ``ALTER COLUMN ... TYPE``; None if not one."""
        match = PG_ALTER_TYPE.match(text.strip())
        if not match:
            return None
        length = int(match.group(3)) if match.group(3) else None
        using = bool(match.group(4) and match.group(4).upper().startswith("USING"))
        return unquote(match.group(1)), " ".join(match.group(2).lower().split()), length, using

    @staticmethod
    def binary_coercible(
        old_type: str, old_length: int | None, new_type: str, new_length: int | None
    ) -> bool:
        """True when the type changes without rewriting the table (catalog only).

        Widening a VARCHAR, VARCHAR to TEXT and TEXT to unbounded VARCHAR are binary-coercible
        (ALTER TABLE's notes); the same type and length is a no-op.
        """
        old, new = old_type.lower(), new_type.lower()
        if old in PG_VARCHAR and new in PG_VARCHAR:
            return new_length is None or (old_length is not None and new_length >= old_length)
        if old in PG_VARCHAR and new == "text":
            return True
        if old == "text" and new in PG_VARCHAR:
            return new_length is None
        return old == new and old_length == new_length

    # -- schema (lock-safe DDL, literals, field checks, verify) ------------------------------

    literal_booleans = ("FALSE", "TRUE")
    literal_keeps_timezone = True  # TIMESTAMPTZ
    failed_statement_aborts_transaction = True
    identifier_limit_in_bytes = True  # NAMEDATALEN counts bytes
    identifier_too_long_consequence = (
        "PostgreSQL silently truncates it, so two long names can collide and lookups by the full name fail"
    )
    # A B-tree entry over the limit is refused row by row, at write time: warn only when even
    # one byte per character (ASCII) can exceed it.
    index_key_bytes_per_char = 1
    key_limit_consequence = {
        "postgres": ": PostgreSQL refuses, row by row at write time, values whose key is longer",
    }
    field_modules = ("playhouse.postgres_ext",)
    native_equivalents = PG_NATIVE_EQUIVALENTS
    equivalent_families = {"float": frozenset({"float"})}
    has_extensions = True

    @classmethod
    def structured_default_text(cls, fld: peewee.Field, value: Any) -> str | None:
        """playhouse.postgres_ext's JSON/JSONB, array and hstore values in their input syntax.

        Read from the field's class and options only: the field need not be bound to a model
        (an unbound JSONField has no ``json_type`` yet, so its ``db_value`` cannot be used).
        """
        try:
            from playhouse.postgres_ext import ArrayField, HStoreField, JSONField
        except ImportError:  # without psycopg2 no such field can exist
            return None
        if value is None:
            return None
        if isinstance(fld, JSONField):
            # What playhouse stores: psycopg2's Json(value), i.e. json.dumps or the field's own dumps=.
            return str((getattr(fld, "_dumps", None) or json.dumps)(value))
        if isinstance(fld, ArrayField) and isinstance(value, (list, tuple)):
            return pg_array_text(value)
        if isinstance(fld, HStoreField) and isinstance(value, dict):
            return pg_hstore_text(value)
        return None

    @classmethod
    def literal_bytes(cls, hexed: str) -> str:
        return f"'\\x{hexed}'::bytea" if hexed else "''::bytea"

    def end_session_hint(self, session_id: int) -> str:
        return f" (SELECT pg_terminate_backend({session_id}) ends it)"

    def blocker_queries(self, table: str | None, schema: str | None) -> list[tuple[str, tuple[Any, ...]]]:
        queries: list[tuple[str, tuple[Any, ...]]] = [(PG_OPEN_TRANSACTIONS, ())]
        if table:
            qualified = f'"{schema}"."{table}"' if schema else f'"{table}"'
            queries.insert(0, (PG_TABLE_HOLDERS, (qualified,)))
        return queries


    # -- authoring (rehearse) ----------------------------------------------------------------

    scratch_privilege = "CREATEDB privilege (ALTER ROLE <user> CREATEDB)"
    # pg_dump of the server's major version; another one can be named here.
    pg_dump_env = "API_DB_PG_DUMP"

    def scratch_name(self, token: str) -> str:
        return f"rehearse_{token}_{self.database.database}"[:63]

    def scratch_create_sql(self, name: str) -> str:
        return f'CREATE DATABASE "{name}"'

    def open_scratch(self, name: str) -> peewee.Database:
        return peewee.PostgresqlDatabase(name, thread_safe=False, **self.database.connect_params)

    def pg_dump_command(self) -> list[str]:
        """pg_dump of the server's major version, with this database's host, port, user and name."""
        import os
        import shutil
        import subprocess

        from api.db.exceptions import RehearsalError

        binary = os.environ.get(self.pg_dump_env) or shutil.which("pg_dump")
        server_major = int(self.scalar("SHOW server_version_num")) // 10000
        if binary is None:
            raise RehearsalError(f"pg_dump not found: install the PostgreSQL {server_major} client tools "
                                 f"(postgresql-client-{server_major}) "
                                 f"or set {self.pg_dump_env}=/path/to/pg_dump")
        text = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"(\d+)(?:\.\d+)*", text)
        if match is None or int(match.group(1)) != server_major:
            raise RehearsalError(f"{binary} is {text.strip() or 'unknown'}, "
                                 f"the server is PostgreSQL {server_major}: "
                                 f"set {self.pg_dump_env} to a pg_dump {server_major} (its output must suit "
                                 "this server)")
        params = self.database.connect_params
        command = [binary, "--no-owner", "--no-privileges", "--no-comments", "-d",
                   str(self.database.database)]
        for flag, key in (("-h", "host"), ("-p", "port"), ("-U", "user")):
            if params.get(key):
                command += [flag, str(params[key])]
        return command

    def _pg_dump(self, section: str) -> str:
        import os
        import subprocess

        from api.db.exceptions import RehearsalError
        from api.db.redact import redact_text

        env = dict(os.environ)
        if self.database.connect_params.get("password"):
            env["PGPASSWORD"] = str(self.database.connect_params["password"])
        done = subprocess.run([*self.pg_dump_command(), f"--section={section}"], capture_output=True,
                              text=True, env=env, timeout=600)
        if done.returncode != 0:
            raise RehearsalError(f"pg_dump --section={section} failed: {redact_text(done.stderr.strip())}")
        # psql meta-commands (\restrict, \unrestrict since the 2025 releases) are not SQL.
        return "\n".join(line for line in done.stdout.splitlines() if not line.startswith("\\"))

    def _run_script(self, scratch: peewee.Database, script: str) -> None:
        # The dump sets search_path to '' for its session: run it on a connection of its own.
        scratch.connect(reuse_if_open=True)
        try:
            scratch.connection().cursor().execute(script)  # no parameters: % stays literal
        finally:
            scratch.close()

    def _copy_rows(self, scratch: peewee.Database, table: str, limit: int | None) -> None:
        import io

        buffer = io.StringIO()
        quoted = '"' + table.replace('"', '""') + '"'
        query = f"SELECT * FROM {quoted}" + ("" if limit is None else f" LIMIT {int(limit)}")
        self.database.cursor().copy_expert(f"COPY ({query}) TO STDOUT", buffer)
        buffer.seek(0)
        scratch.connect(reuse_if_open=True)
        scratch.connection().cursor().copy_expert(f"COPY {quoted} FROM STDIN", buffer)

    def _copy_sequences(self, scratch: peewee.Database) -> None:
        rows = self.database.execute_sql(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename), last_value "
            "FROM pg_sequences WHERE last_value IS NOT NULL"
        ).fetchall()
        for sequence, value in rows:
            scratch.execute_sql("SELECT setval(%s::regclass, %s)", (sequence, value))

    def copy_into_scratch(self, scratch: peewee.Database, rows: int, whole: frozenset[str]) -> list[str]:
        """pg_dump --schema-only in two sections (pre-data, then indexes and constraints), rows in between."""
        tables = sorted(self.database.get_tables())
        self._run_script(scratch, self._pg_dump("pre-data"))
        for table in tables:
            if table in whole or rows > 0:
                self._copy_rows(scratch, table, None if table in whole else rows)
        self._copy_sequences(scratch)
        post = self._pg_dump("post-data")
        if rows > 0:  # the first rows of a child need not have their parent: keep the keys, unchecked
            post = re.sub(r"(FOREIGN KEY \([^;]*?);", r"\1 NOT VALID;", post)
        scratch.close()
        self._run_script(scratch, post)
        return tables

    def drop_scratch(self, name: str) -> None:
        force = " WITH (FORCE)" if int(self.scalar("SHOW server_version_num")) >= 130000 else ""
        self.database.execute_sql(f'DROP DATABASE IF EXISTS "{name}"{force}')

    def scratch_exists(self, name: str) -> bool:
        return self.scalar("SELECT count(*) FROM pg_database WHERE datname = %s", (name,)) > 0

    # -- connections, pool and health --------------------------------------------------------

    url_schemes = ("postgresql", "postgres")
    playhouse_scheme = "postgresql+pool"
    driver = "psycopg2"
    extra = "postgres"
    has_pgvector = True
    preflight_checks = ("statement_timeout", "pgvector")
    default_port = 5432
    begin_read_write = "BEGIN READ WRITE"  # on a hot standby: 25006 at once, before any statement
    driver_host_lists = True  # libpq tries host=h1,h2 in order and honours target_session_attrs

    @staticmethod
    def add_option(params: dict[str, Any], option: str) -> None:
        """Append a ``-c setting=value`` to libpq's ``options`` connect parameter."""
        params["options"] = f"{params['options']} {option}" if params.get("options") else option

    @classmethod
    def apply_timeouts(cls, params: dict[str, Any], pool: Any) -> None:
        # libpq takes whole seconds, at least 2.
        params.setdefault("connect_timeout", max(2, math.ceil(pool.connect_timeout)))
        cls.name_session(params, pool.app_name)
        for key, value in POSTGRES_KEEPALIVES.items():
            params.setdefault(key, value)
        # A transaction pooler (PgBouncer) refuses startup options: the timeout is set per transaction.
        if pool.statement_timeout > 0 and pool.pooler != "pgbouncer":
            cls.add_option(params, f"-c statement_timeout={int(pool.statement_timeout * 1000)}")

    @classmethod
    def connection_fileno(cls, conn: Any) -> int | None:
        return None if conn.closed else int(conn.fileno())

    def probe_database(
        self, params: dict[str, Any], *, connect_timeout: int, statement_timeout: float, io_timeout: float
    ) -> peewee.Database:
        params["connect_timeout"] = connect_timeout
        # The last -c of a setting wins over the application's own; a pooler in front refuses -c options.
        if getattr(self.database, "pooled", False):
            self.drop_pooled_startup_options(params)
        else:
            self.add_option(params, f"-c statement_timeout={int(statement_timeout * 1000)}")
        params["application_name"] = f"{params.get('application_name') or 'api.db'}-health"[:63]
        return peewee.PostgresqlDatabase(self.database.database, thread_safe=False, **params)

    def server_facts(self) -> ServerFacts:
        facts = ServerFacts(
            max_connections=int(self.scalar("SHOW max_connections")),
            current_connections=int(self.scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            )),
        )  # fmt: skip
        for name in ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout"):
            facts.timeouts[name] = str(self.scalar(f"SHOW {name}"))
        return facts

    # -- clusters: roles, lag, poolers -----------------------------------------------------

    def read_role(self, cursor: Any) -> MemberRole:
        cursor.execute(PG_ROLE_SQL)
        recovering, lag = cursor.fetchone()
        if not recovering:
            return MemberRole("primary")
        return MemberRole("replica", lag_seconds=float(lag))

    @classmethod
    def pooler_refusal(cls, exc: BaseException) -> bool:
        return PG_POOLER_REFUSAL.search(str(exc)) is not None

    @classmethod
    def unanswered(cls, exc: BaseException) -> bool:
        from api.db.error_handler import driver_error

        orig = driver_error(exc)
        return getattr(orig, "pgcode", None) is None and PG_UNANSWERED.match(str(orig).strip()) is not None

    @classmethod
    def drop_pooled_startup_options(cls, params: dict[str, Any]) -> bool:
        options = str(params.get("options") or "")
        kept = [opt for opt in re.split(r"\s+(?=-c\s)", options.strip()) if opt and not any(
            opt.replace(" ", "").startswith(f"-c{name}=") for name in PG_STARTUP_ONLY)]  # fmt: skip
        if " ".join(kept) == options.strip():
            return False
        if kept:
            params["options"] = " ".join(kept)
        else:
            params.pop("options", None)
        return True

    @classmethod
    def transaction_settings(cls, pool: Any) -> str:
        if pool.statement_timeout <= 0:
            return ""
        return f"SET LOCAL statement_timeout = {int(pool.statement_timeout * 1000)}"

    def backend_id(self, cursor: Any) -> Any:
        return scalar(cursor, "SELECT pg_backend_pid()")
