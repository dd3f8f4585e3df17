"""PostgreSQL: everything api.db knows about it, as data and as the SQL that reads it."""

from __future__ import annotations

import hashlib
import logging
import math
from typing import Any

import peewee

from api.db.engines.base import LOCK_NAMESPACE, Engine, Flavour, ServerFacts, scalar
from api.db.engines.info import ServerInfo, parse_version

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


class PostgresEngine(Engine):
    """PostgreSQL through psycopg2."""

    name = "postgres"
    database_class = peewee.PostgresqlDatabase
    flavours = (POSTGRES,)
    terminate_hint = "PostgreSQL: SELECT pg_terminate_backend(pid); MySQL: KILL connection_id"

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
            return scalar(cur, "SELECT pg_advisory_unlock(%s)", (PG_LOCK_KEY,)) == 1, "SELECT pg_advisory_unlock"

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
            "SELECT a.pid, a.application_name, a.client_addr::text, a.usename, a.backend_start, a.xact_start, "
            "a.state, left(a.query, 200) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s "
            "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            (classid, objid),
        )
        row = cursor.fetchone()
        if not row:
            return {}
        keys = ("pid", "application_name", "client_addr", "user", "backend_start", "xact_start", "state", "query")
        return dict(zip(keys, row))

    def after_lock(self, conn: Any) -> bool:
        from api.db.error_handler import classify_error

        if getattr(conn, "server_version", 0) < 140000:
            return False
        try:
            with conn.cursor() as cur:
                cur.execute(f"SET client_connection_check_interval = '{DEAD_CLIENT_CHECK}'")
        except Exception as exc:  # an older or restricted server: the lock works without it
            logger.debug("client_connection_check_interval not set: %s", classify_error(exc, self.name).message)
            return False
        return True

    def before_unlock(self, conn: Any) -> None:
        from api.db.error_handler import classify_error

        try:
            with conn.cursor() as cur:
                cur.execute("RESET client_connection_check_interval")
        except Exception as exc:  # a dead connection takes its settings with it
            logger.warning("could not reset client_connection_check_interval: %s", classify_error(exc, self.name).message)

    # -- previews (statement analysis) ----------------------------------------------------

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


    # -- connections, pool and health --------------------------------------------------------

    url_schemes = ("postgresql", "postgres")
    playhouse_scheme = "postgresql+pool"
    driver = "psycopg2"
    extra = "postgres"
    has_pgvector = True
    preflight_checks = ("statement_timeout", "pgvector")

    @staticmethod
    def add_option(params: dict[str, Any], option: str) -> None:
        """Append a ``-c setting=value`` to libpq's ``options`` connect parameter."""
        params["options"] = f"{params['options']} {option}" if params.get("options") else option

    @classmethod
    def apply_timeouts(cls, params: dict[str, Any], pool: Any) -> None:
        # libpq takes whole seconds, at least 2.
        params.setdefault("connect_timeout", max(2, math.ceil(pool.connect_timeout)))
        params.setdefault("application_name", pool.app_name)
        for key, value in POSTGRES_KEEPALIVES.items():
            params.setdefault(key, value)
        if pool.statement_timeout > 0:
            cls.add_option(params, f"-c statement_timeout={int(pool.statement_timeout * 1000)}")

    def probe_database(
        self, params: dict[str, Any], *, connect_timeout: int, statement_timeout: float, io_timeout: float
    ) -> peewee.Database:
        params["connect_timeout"] = connect_timeout
        # The last -c of a setting wins over the application's own.
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
