"""MySQL and MariaDB: one protocol family, two flavours, as data and as the SQL that reads them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

import peewee

from api.db.engines.base import LOCK_NAMESPACE, Engine, Flavour, MemberRole, ServerFacts, scalar
from api.db.engines.info import ServerInfo, parse_version
from api.db.engines.statements import (
    ACCESS_EXCLUSIVE,
    DATA,
    IDENT,
    INDEX,
    METADATA,
    NAME,
    REWRITE,
    SCAN,
    AlterForm,
    StatementEffect,
    match_alter,
)

MYSQL_LOCK_NAME_MAX = 64

MYSQL = Flavour(
    "mysql",
    "MySQL",
    {
        "full_text_search": True,  # FULLTEXT indexes on InnoDB, MATCH ... AGAINST
        "json_functions": True,  # 5.7.8+
        "auto_increment": True,
        "sequence_support": False,
        "type_casting": "limited",  # CAST(x AS SIGNED/CHAR/DATE/...); no ::, no USING
        "max_varchar": 16383,  # 65,535-byte row limit / 4 bytes per utf8mb4 character
        "transactional_ddl": False,  # every DDL statement commits implicitly
        "advisory_locks": True,  # GET_LOCK / RELEASE_LOCK
        "add_column_if_not_exists": False,  # no IF NOT EXISTS for columns in any MySQL version
        "instant_add_column": True,  # 8.0.12+: ALGORITHM=INSTANT is the default for ADD COLUMN
        "concurrent_index": True,  # online DDL: ALGORITHM=INPLACE, LOCK=NONE
        "lock_timeout_setting": "lock_wait_timeout",  # whole seconds, metadata locks
        "max_identifier_length": 64,  # characters
        "max_index_key_bytes": 3072,  # InnoDB DYNAMIC/COMPRESSED rows (767 with COMPACT/REDUNDANT)
        "native_json_type": True,  # 5.7.8+: binary JSON
        "partial_indexes": False,
        "check_constraints": True,  # 8.0.16+ enforced; parsed and ignored before
        "vector_type": True,  # 9.0+ VECTOR
    },
    version_gates={
        "json_functions": ((5, 7, 8), False),
        "native_json_type": ((5, 7, 8), False),
        "instant_add_column": ((8, 0, 12), False),
        "check_constraints": ((8, 0, 16), False),
        "max_index_key_bytes": ((5, 7, 7), 767),
        "vector_type": ((9, 0), False),
    },
    min_version=(8, 0),
)

MARIADB = Flavour(
    "mariadb",
    "MariaDB",
    {
        "full_text_search": True,  # FULLTEXT indexes, MATCH ... AGAINST
        "json_functions": True,  # 10.2.3+
        "auto_increment": True,
        "sequence_support": True,  # 10.3+ CREATE SEQUENCE, NEXTVAL()
        "type_casting": "limited",
        "max_varchar": 16383,
        "transactional_ddl": False,  # implicit commit, as MySQL
        "advisory_locks": True,  # GET_LOCK / RELEASE_LOCK
        "add_column_if_not_exists": True,  # 10.0.2+
        "instant_add_column": True,  # 10.3.2+ (10.4+: at any position)
        "concurrent_index": True,  # ALGORITHM=INPLACE, LOCK=NONE
        "lock_timeout_setting": "lock_wait_timeout",  # also SET STATEMENT ... FOR, scoped to one statement
        "max_identifier_length": 64,
        "max_index_key_bytes": 3072,  # 10.2.2+ with DYNAMIC rows (767 before)
        "native_json_type": False,  # JSON is an alias of LONGTEXT with a json_valid() CHECK
        "partial_indexes": False,
        "check_constraints": True,  # 10.2.1+ enforced
        "vector_type": True,  # 11.7+ VECTOR
    },
    version_gates={
        "add_column_if_not_exists": ((10, 0, 2), False),
        "check_constraints": ((10, 2, 1), False),
        "max_index_key_bytes": ((10, 2, 2), 767),
        "json_functions": ((10, 2, 3), False),
        "instant_add_column": ((10, 3, 2), False),
        "sequence_support": ((10, 3), False),
        "vector_type": ((11, 7), False),
    },
    min_version=(10, 3),
)


def mysql_lock_name(database_name: str) -> str:
    """``api.db.migrate:<database>``, hashed when longer than MySQL's 64-character limit."""
    name = f"{LOCK_NAMESPACE}:{database_name}"
    if len(name) > MYSQL_LOCK_NAME_MAX:
        name = f"{LOCK_NAMESPACE}:{hashlib.sha256(database_name.encode()).hexdigest()[:40]}"
    return name


# -- migrations: the variables that make a server or session refuse writes (absent ones are skipped:
# MariaDB has no super_read_only, older servers say tx_read_only).
MYSQL_READ_ONLY_VARIABLES = ("read_only", "super_read_only", "innodb_read_only", "transaction_read_only",
                             "tx_read_only")  # fmt: skip
MYSQL_READ_ONLY = (
    "SHOW VARIABLES WHERE Variable_name IN ("
    + ", ".join(f"'{name}'" for name in MYSQL_READ_ONLY_VARIABLES)
    + ")"
)
# -- schema: the sessions that may block DDL. MySQL: performance_schema.metadata_locks; MariaDB:
# METADATA_LOCK_INFO when its plugin is installed; both fall back to open InnoDB transactions.
MYSQL_PERFORMANCE_SCHEMA = """
SELECT t.PROCESSLIST_ID, coalesce(p.INFO, ''), coalesce(p.COMMAND, ''),
       coalesce(TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, p.TIME),
       GROUP_CONCAT(DISTINCT m.LOCK_TYPE), coalesce(p.USER, ''), ''
FROM performance_schema.metadata_locks m
JOIN performance_schema.threads t ON t.THREAD_ID = m.OWNER_THREAD_ID
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = t.PROCESSLIST_ID
LEFT JOIN information_schema.INNODB_TRX x ON x.trx_mysql_thread_id = t.PROCESSLIST_ID
WHERE m.OBJECT_SCHEMA = DATABASE() AND m.OBJECT_NAME = %s AND m.LOCK_STATUS = 'GRANTED'
  AND t.PROCESSLIST_ID <> CONNECTION_ID()
GROUP BY t.PROCESSLIST_ID, p.INFO, p.COMMAND, x.trx_started, p.TIME, p.USER
"""

MARIADB_METADATA_LOCK_INFO = """
SELECT m.THREAD_ID, coalesce(p.INFO, ''), coalesce(p.COMMAND, ''),
       coalesce(TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, p.TIME),
       GROUP_CONCAT(DISTINCT m.LOCK_MODE), coalesce(p.USER, ''), ''
FROM information_schema.METADATA_LOCK_INFO m
LEFT JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID
LEFT JOIN information_schema.INNODB_TRX x ON x.trx_mysql_thread_id = m.THREAD_ID
WHERE m.TABLE_SCHEMA = DATABASE() AND m.TABLE_NAME = %s AND m.THREAD_ID <> CONNECTION_ID()
GROUP BY m.THREAD_ID, p.INFO, p.COMMAND, x.trx_started, p.TIME, p.USER
"""

# Without a metadata-lock view: the open InnoDB transactions of sessions using this database.
MYSQL_OPEN_TRANSACTIONS = """
SELECT p.ID, coalesce(p.INFO, x.trx_query, ''), coalesce(p.COMMAND, ''),
       TIMESTAMPDIFF(MICROSECOND, x.trx_started, NOW(6)) / 1e6, '', coalesce(p.USER, ''), ''
FROM information_schema.INNODB_TRX x
JOIN information_schema.PROCESSLIST p ON p.ID = x.trx_mysql_thread_id
WHERE p.ID <> CONNECTION_ID() AND p.DB = DATABASE()
ORDER BY x.trx_started
LIMIT 10
"""

# -- schema: column types outside peewee's tables, as MySQL/MariaDB spell them (get_equivalent_type).
MYSQL_NATIVE_EQUIVALENTS: dict[str, str] = {
    "JSONB": "JSON", "JSON": "JSON", "TIMESTAMPTZ": "DATETIME(6)", "LONGTEXT": "LONGTEXT",
    "MEDIUMTEXT": "MEDIUMTEXT", "LONGBLOB": "LONGBLOB", "TINYINT(1)": "TINYINT(1)", "INTEGER": "INTEGER",
    "VECTOR": "VECTOR",
}
# -- schema: flavours with SET STATEMENT ... FOR, which scopes settings to one statement.
SET_STATEMENT_FLAVOURS = frozenset({"mariadb"})
# -- connections, pool and health: client-side read/write timeouts on MySQL exceed the server's
# statement limit by this much; the driver defaults; the variables preflight reports.
MYSQL_IO_MARGIN = 10.0
# client_flag FOUND_ROWS (pymysql.constants.CLIENT.FOUND_ROWS = 2): an UPDATE reports the rows it matched,
# as on PostgreSQL, not only those whose values changed; the fenced history writes decide from that count.
MYSQL_DEFAULTS: dict[str, Any] = {"charset": "utf8mb4", "client_flag": 2}
MYSQL_PREFLIGHT_TIMEOUTS = ("lock_wait_timeout", "innodb_lock_wait_timeout", "max_execution_time",
                            "max_statement_time", "wait_timeout")  # fmt: skip
MYSQL_PREFLIGHT_SETTINGS = ("character_set_database", "sql_mode")
MYSQL_PREFLIGHT_VARIABLES = (
    "SHOW VARIABLES WHERE Variable_name IN ('max_connections', 'lock_wait_timeout',"
    " 'innodb_lock_wait_timeout', 'max_execution_time', 'max_statement_time', 'character_set_database',"
    " 'sql_mode', 'wait_timeout')"
)
# -- clusters: Galera takes traffic only when wsrep_ready=ON and the node is Synced (a donor, a
# desynced or a joining node answers queries but lags or blocks); replica lag columns by server age.
GALERA_STATUS = "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_ready', 'wsrep_local_state_comment', " \
    "'wsrep_cluster_size', 'wsrep_cluster_status')"
GALERA_SYNCED = "Synced"
REPLICA_STATUS = ("SHOW REPLICA STATUS", "SHOW SLAVE STATUS")
REPLICA_LAG_COLUMNS = ("Seconds_Behind_Source", "Seconds_Behind_Master")
MYSQL_SYNTAX_ERROR = 1064
# -- previews (statement analysis) --------------------------------------------------------
# MySQL 8.0 / MariaDB "Online DDL operations": the ALGORITHM each ALTER TABLE form can use
# (INSTANT: metadata only; INPLACE: no table copy, concurrent DML allowed, sometimes a
# rebuild; COPY: the table is copied and writes wait).
INSTANT = "INSTANT"
INPLACE = "INPLACE"
COPY = "COPY"
MYSQL_ROW_LOCKS = "row locks"  # INSERT/UPDATE/DELETE: InnoDB locks the rows it touches
# (flavour, operation) -> first version where the operation is INSTANT.
MYSQL_INSTANT_SINCE: dict[tuple[str, str], tuple[int, ...]] = {
    ("mysql", "add_column"): (8, 0, 12),
    ("mariadb", "add_column"): (10, 3, 2),
    ("mysql", "drop_column"): (8, 0, 29),
    ("mariadb", "drop_column"): (10, 4),
    ("mysql", "rename_column"): (8, 0, 28),
    ("mariadb", "rename_column"): (10, 3),
    ("mysql", "drop_index"): (99,),  # INPLACE, metadata only
    ("mariadb", "drop_index"): (10, 3),
}
# ALTER TABLE forms, first match wins: (pattern, kind, algorithm, blocks writes, rewrites, operation).
# A form with ``instant`` is METADATA under INSTANT from the version MYSQL_INSTANT_SINCE names.
_RENAME_COLUMN = r"(?:RENAME\s+COLUMN|CHANGE(?:\s+COLUMN)?)"
MYSQL_ALTER_FORMS: tuple[AlterForm, ...] = (
    AlterForm(rf"RENAME\s+(?:TO|AS)\b|RENAME\s+(?!COLUMN\b|INDEX\b|KEY\b){IDENT}\s*$", METADATA, INSTANT,
              False, False, "rename_table", "rename_table", names=r"RENAME\s+(?:TO\s+|AS\s+)?(.*)"),
    AlterForm(rf"{_RENAME_COLUMN}\b", METADATA, INPLACE, False, False, "rename_column", "rename_column",
              names=rf"{_RENAME_COLUMN}\s+{NAME}\s+(?:TO\s+)?{NAME}", instant="rename_column"),
    AlterForm(r"DROP\s+(?:INDEX|KEY)\b", METADATA, INPLACE, False, False, "drop_index", instant="drop_index"),
    AlterForm(r"DROP\s+(?:FOREIGN\s+KEY|CONSTRAINT|CHECK|PRIMARY)\b", METADATA, INPLACE, False, False,
              "drop_constraint"),
    AlterForm(r"DROP\b", REWRITE, INPLACE, False, True, "drop_column", "drop_column", instant="drop_column"),
    # INPLACE only with foreign_key_checks=0
    AlterForm(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b", REWRITE, COPY, True, True, "add_foreign_key"),
    AlterForm(r"ADD\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?(?:INDEX|KEY)\b"
              r"|ADD\s+(?:CONSTRAINT\s+\S+\s+)?UNIQUE\b", INDEX, INPLACE, False, False, "add_index"),
    AlterForm(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b", REWRITE, INPLACE, False, True,
              "add_primary_key"),
    AlterForm(r"ALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET|DROP)\s+DEFAULT\b", METADATA, INSTANT, False, False,
              "column_default"),
    AlterForm(r"MODIFY\b", REWRITE, COPY, True, True, "alter_column_type"),
    AlterForm(r"ADD\b", REWRITE, INPLACE, False, True, "add_column", instant="add_column"),
    AlterForm(r"", REWRITE, COPY, True, True, "alter_table"),
)
_ALGORITHM_CLAUSE = re.compile(r"\bALGORITHM\s*=?\s*(INSTANT|INPLACE|COPY|NOCOPY|DEFAULT)\b")
_LOCK_CLAUSE = re.compile(r"\bLOCK\s*=?\s*(NONE|SHARED|EXCLUSIVE|DEFAULT)\b")


class MySQLEngine(Engine):
    """MySQL and MariaDB through PyMySQL."""

    name = "mysql"
    database_class = peewee.MySQLDatabase
    otel_system = "mysql"
    lock_strategy = "get_lock"
    upsert_names_key = False
    flavours = (MYSQL, MARIADB)
    app_name_param = "program_name"
    app_name_limit = 255  # performance_schema.session_connect_attrs keeps longer values truncated
    lock_wait_step = 5.0  # GET_LOCK waits in slices so that the holder can be logged while waiting
    terminate_hint = "PostgreSQL: SELECT pg_terminate_backend(pid); MySQL: KILL connection_id"

    def isolation_level(self) -> str:
        """``@@transaction_isolation`` (MySQL 5.7.20+, MariaDB 11.1+), else ``@@tx_isolation``."""
        try:
            value = self.scalar("SELECT @@SESSION.transaction_isolation")
        except peewee.DatabaseError:  # an older MariaDB: the old name (an error aborts no transaction here)
            value = self.scalar("SELECT @@SESSION.tx_isolation")
        return str(value).lower().replace("-", " ")

    def read_server_info(self) -> ServerInfo:
        text = str(self.scalar("SELECT VERSION()"))
        name = str(self.scalar("SELECT DATABASE()"))
        flavour = "mariadb" if "mariadb" in text.lower() else "mysql"
        return ServerInfo(self.name, flavour, parse_version(text), text, name)

    # -- the migration lock: GET_LOCK, server-wide, so the name carries the database ---------

    @property
    def lock_name(self) -> str:
        return mysql_lock_name(str(self.database.database))

    def try_lock(self, conn: Any, wait: float) -> bool:
        with conn.cursor() as cur:
            # MariaDB takes fractional seconds; MySQL rounds them.
            return scalar(cur, "SELECT GET_LOCK(%s, %s)", (self.lock_name, round(wait, 3))) == 1

    def unlock(self, conn: Any) -> tuple[bool, str]:
        with conn.cursor() as cur:
            return scalar(cur, "SELECT RELEASE_LOCK(%s)", (self.lock_name,)) == 1, "SELECT RELEASE_LOCK"

    def lock_label(self) -> str:
        return f"GET_LOCK {self.lock_name}"

    backend_id_sql = "SELECT CONNECTION_ID()"
    # NOW(6): microseconds; Galera replicates rows, so every node stores the origin's value.
    lease_now_sql = "UNIX_TIMESTAMP(NOW(6))"

    def driver_backend_id(self, conn: Any) -> Any:
        return conn.thread_id()

    def cluster_problem(self, conn: Any) -> str | None:
        """GET_LOCK is node-local on Galera: the same name is granted on every node at once."""
        with conn.cursor() as cur:
            try:
                on = str(scalar(cur, "SELECT @@wsrep_on"))
            except Exception:  # MySQL: no such variable (error 1193), so no Galera
                return None
        return "wsrep_on=ON (Galera)" if on.upper() in ("1", "ON") else None

    def read_lock_holder(self) -> dict[str, Any]:
        conn_id = self.scalar("SELECT IS_USED_LOCK(%s)", (self.lock_name,))
        if conn_id is None:
            return {}
        row = self.database.execute_sql(
            "SELECT ID, USER, HOST, DB, COMMAND, TIME, STATE, LEFT(INFO, 200) "
            "FROM information_schema.PROCESSLIST WHERE ID = %s",
            (conn_id,),
        ).fetchone()
        holder: dict[str, Any] = {"connection_id": conn_id}
        if row:
            keys = ("connection_id", "user", "host", "db", "command", "seconds_in_state", "state", "query")
            holder.update(zip(keys, row))
        program = self._program_name(conn_id)
        if program:
            holder["program_name"] = program  # APP_NAME@host:pid of the holding process (connect() sets it)
        return holder

    # -- migrations: the session behind a run, read-only targets -------------------------

    read_only_advice = (
        "connect to the primary; on a server meant to take writes, SET GLOBAL read_only = OFF "
        "(super_read_only likewise; innodb_read_only needs a restart without --innodb-read-only)"
    )

    def session_id(self, conn: Any) -> str:
        return f"session:{conn.thread_id()}"

    def session_closed(self, conn: Any) -> bool:
        return not conn.open

    def read_only_reason(self) -> str | None:
        found = self.database.execute_sql(MYSQL_READ_ONLY).fetchall()
        values = {str(k).lower(): str(v).upper() for k, v in found}
        on = [name for name in MYSQL_READ_ONLY_VARIABLES if values.get(name) in ("ON", "1")]
        return f"{' and '.join(on)} {'is' if len(on) == 1 else 'are'} ON" if on else None
    def _program_name(self, conn_id: Any) -> str | None:
        """The holder's ``program_name`` connect attribute; None if performance_schema is off (MariaDB)."""
        try:
            row = self.database.execute_sql(
                "SELECT ATTR_VALUE FROM performance_schema.session_connect_attrs "
                "WHERE PROCESSLIST_ID = %s AND ATTR_NAME = 'program_name'",
                (conn_id,),
            ).fetchone()
        except peewee.DatabaseError:  # no performance_schema, or no privilege on it
            return None
        return str(row[0]) if row else None

    # -- previews (statement analysis) ----------------------------------------------------

    @classmethod
    def statement_lock(cls, kind: str, pg_lock: str, rewrites: bool) -> tuple[str, bool, bool]:
        if kind == DATA:
            return MYSQL_ROW_LOCKS, False, False
        algorithm = COPY if rewrites else (INPLACE if kind in (INDEX, SCAN) else INSTANT)
        return algorithm, rewrites, rewrites

    @classmethod
    def index_build(cls, concurrent: bool, text: str) -> tuple[str, bool, bool, bool]:
        copy = bool(re.search(r"\bALGORITHM\s*=?\s*COPY\b", text, re.IGNORECASE))
        return (COPY if copy else INPLACE), copy, copy, not copy

    @classmethod
    def drop_index(cls, concurrent: bool) -> tuple[str, bool, bool]:
        return cls.statement_lock(METADATA, ACCESS_EXCLUSIVE, False)

    @classmethod
    def alter_effect(cls, table: str, rest: str, flavour: str, version: tuple[int, ...]) -> StatementEffect:
        found = match_alter(MYSQL_ALTER_FORMS, rest)
        effect = found.effect(table)
        if found.old is not None and found.old == found.new:  # CHANGE c c INT: a type change, not a rename
            effect = replace(effect, breaking=None)
        since = MYSQL_INSTANT_SINCE.get((flavour, found.form.instant))
        if since is not None and version >= since:
            effect = replace(effect, kind=METADATA, lock=INSTANT, rewrites_table=False)
        return cls._with_clauses(effect, rest.strip().upper())

    @staticmethod
    def _with_clauses(effect: StatementEffect, up: str) -> StatementEffect:
        """The effect under the statement's own ALGORITHM= and LOCK= clauses."""
        explicit = _ALGORITHM_CLAUSE.search(up)
        lock_clause = _LOCK_CLAUSE.search(up)
        algorithm = effect.lock
        if explicit and explicit.group(1) in (INSTANT, INPLACE, COPY):
            algorithm = explicit.group(1)
        blocks = algorithm == COPY or bool(lock_clause and lock_clause.group(1) in ("SHARED", "EXCLUSIVE"))
        if algorithm != COPY:
            return replace(effect, lock=algorithm, blocks_writes=blocks)
        kind = effect.kind if effect.kind == INDEX else REWRITE
        return replace(effect, kind=kind, lock=algorithm, blocks_writes=blocks, rewrites_table=True)

    catalog_objects: ClassVar[dict[str, str]] = {
        "view": "SELECT 1 FROM information_schema.VIEWS WHERE TABLE_NAME = %s "
        "AND TABLE_SCHEMA = COALESCE(%s, DATABASE())",
        "function": "SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_NAME = %s "
        "AND ROUTINE_SCHEMA = COALESCE(%s, DATABASE())",
        "trigger": "SELECT 1 FROM information_schema.TRIGGERS WHERE TRIGGER_NAME = %s "
        "AND TRIGGER_SCHEMA = COALESCE(%s, DATABASE())",
        "constraint": "SELECT 1 FROM information_schema.TABLE_CONSTRAINTS WHERE CONSTRAINT_NAME = %s "
        "AND CONSTRAINT_SCHEMA = COALESCE(%s, DATABASE())",
    }
    catalog_objects["procedure"] = catalog_objects["function"]

    def column_type_sql(self, table: str, column: str) -> str | None:
        """``COLUMN_TYPE`` of the column: the type with its length and sign (``varchar(20)``)."""
        row = self.database.execute_sql(
            "SELECT COLUMN_TYPE FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (table, column),
        ).fetchone()
        return None if row is None else str(row[0])

    def column_default_sql(self, table: str, column: str) -> str | None:
        """The default as SQL: MySQL shows literals unquoted (MariaDB quotes them), expressions marked."""
        row = self.database.execute_sql(
            "SELECT COLUMN_DEFAULT, EXTRA FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s AND COLUMN_NAME = %s",
            (table, column),
        ).fetchone()
        if row is None or row[0] is None or str(row[0]).upper() == "NULL":
            return None
        value, extra = str(row[0]), str(row[1] or "")
        if "DEFAULT_GENERATED" in extra.upper():
            return f"({value})"
        if value.startswith("'") or value.endswith(")") or re.fullmatch(r"-?\d+(\.\d+)?", value):
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"

    def table_size(self, table: str) -> tuple[int, int] | None:
        row = self.database.execute_sql(
            "SELECT TABLE_ROWS, DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
            (table,),
        ).fetchone()
        return None if row is None else (int(row[0] or 0), int(row[1] or 0))

    # -- schema (lock-safe DDL, literals, field checks, verify) ------------------------------

    # Without NO_BACKSLASH_ESCAPES in sql_mode, MySQL reads \ as an escape inside '...'.
    literal_backslash_escapes = True
    # MySQL (not MariaDB) accepts a DEFAULT on TEXT/BLOB/JSON columns only as an expression,
    # and only from 8.0.13 on.
    expression_default_types = {"mysql": frozenset({"TEXT", "BLOB", "JSON"})}
    expression_default_since = (8, 0, 13)
    identifier_too_long_consequence = "{title} refuses it (error 1059)"
    index_key_bytes_per_char = 4  # utf8mb4; InnoDB refuses the index itself
    key_limit_consequence = {
        "mysql": ": MySQL refuses the index (error 1071)",
        "mariadb": (
            ": MariaDB silently shortens a plain index to a prefix (not covering, not exact) and turns a "
            "UNIQUE one into a hash index (USING HASH, unusable by foreign keys and range scans)"
        ),
    }
    text_index_consequence = {
        "mysql": "MySQL indexes TEXT/BLOB only with a prefix length and refuses this index (error 1170)",
        "mariadb": "MariaDB silently indexes only a 768-character prefix of a TEXT/BLOB column",
    }
    field_modules = ("playhouse.mysql_ext",)
    native_equivalents = MYSQL_NATIVE_EQUIVALENTS
    equivalent_families = {
        "boolean": frozenset({"integer"}),  # BOOL is TINYINT(1)
        "uuid": frozenset({"char"}),  # peewee stores UUIDs as VARCHAR(40)
        "text": frozenset({"text", "char"}),
    }

    @classmethod
    def set_statement(cls, flavour: str) -> bool:
        """Whether ``flavour`` has ``SET STATEMENT ... FOR`` (nothing to restore afterwards)."""
        return flavour in SET_STATEMENT_FLAVOURS

    def backslash_escapes(self) -> bool:
        mode = self.database.execute_sql("SELECT @@SESSION.sql_mode").fetchone()[0] or ""
        return "NO_BACKSLASH_ESCAPES" not in str(mode).upper()

    def end_session_hint(self, session_id: int) -> str:
        return f" (KILL {session_id} ends it)"

    def blocker_queries(self, table: str | None, schema: str | None) -> list[tuple[str, tuple[Any, ...]]]:
        views = (MYSQL_PERFORMANCE_SCHEMA, MARIADB_METADATA_LOCK_INFO) if table else ()
        return [*((sql, (table,)) for sql in views), (MYSQL_OPEN_TRANSACTIONS, ())]


    # -- authoring (rehearse) ----------------------------------------------------------------

    scratch_privilege = (
        "CREATE and DROP on the scratch database (GRANT CREATE, DROP ON `rehearse\\_%`.* TO <user>)"
    )

    def scratch_name(self, token: str) -> str:
        return f"rehearse_{token}_{self.database.database}"[:64]

    def scratch_create_sql(self, name: str) -> str:
        charset, collation = self.database.execute_sql(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA "
            "WHERE SCHEMA_NAME = DATABASE()"
        ).fetchone()
        return f"CREATE DATABASE `{name}` CHARACTER SET {charset} COLLATE {collation}"

    def open_scratch(self, name: str) -> peewee.Database:
        return peewee.MySQLDatabase(name, thread_safe=False, **self.database.connect_params)

    def _foreign_keys(self) -> list[tuple[str, str, str, str, str, str, str]]:
        """(table, constraint, columns, referenced table, referenced columns, ON DELETE, ON UPDATE)."""
        return list(self.database.execute_sql(
            "SELECT k.TABLE_NAME, k.CONSTRAINT_NAME,"
            " GROUP_CONCAT(CONCAT('`', k.COLUMN_NAME, '`') ORDER BY k.ORDINAL_POSITION),"
            " k.REFERENCED_TABLE_NAME,"
            " GROUP_CONCAT(CONCAT('`', k.REFERENCED_COLUMN_NAME, '`') ORDER BY k.ORDINAL_POSITION),"
            " r.DELETE_RULE, r.UPDATE_RULE"
            " FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r"
            " ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME"
            " AND r.TABLE_NAME = k.TABLE_NAME"
            " WHERE k.TABLE_SCHEMA = DATABASE() AND k.REFERENCED_TABLE_NAME IS NOT NULL"
            " GROUP BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.REFERENCED_TABLE_NAME, r.DELETE_RULE, r.UPDATE_RULE"
        ).fetchall())  # fmt: skip

    def copy_into_scratch(self, scratch: peewee.Database, rows: int, whole: frozenset[str]) -> list[str]:
        """CREATE TABLE ... LIKE per table (+ INSERT ... SELECT ... LIMIT), then foreign keys LIKE drops."""
        source, tables = self.database.database, sorted(self.database.get_tables())
        scratch.connect(reuse_if_open=True)
        try:
            scratch.execute_sql("SET SESSION FOREIGN_KEY_CHECKS = 0")  # partial rows; this connection only
            for table in tables:
                scratch.execute_sql(f"CREATE TABLE `{table}` LIKE `{source}`.`{table}`")
                if table in whole or rows > 0:
                    limit = "" if table in whole else f" LIMIT {int(rows)}"
                    scratch.execute_sql(f"INSERT INTO `{table}` SELECT * FROM `{source}`.`{table}`{limit}")
            for table, name, columns, target, target_columns, on_delete, on_update in self._foreign_keys():
                scratch.execute_sql(
                    f"ALTER TABLE `{table}` ADD CONSTRAINT `{name}` FOREIGN KEY ({columns}) REFERENCES "
                    f"`{target}` ({target_columns}) ON DELETE {on_delete} ON UPDATE {on_update}"
                )
        finally:
            scratch.close()
        return tables

    def drop_scratch(self, name: str) -> None:
        self.database.execute_sql(f"DROP DATABASE IF EXISTS `{name}`")

    def scratch_exists(self, name: str) -> bool:
        return (
            self.scalar("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (name,))
            > 0
        )

    # -- connections, pool and health --------------------------------------------------------

    url_schemes = ("mysql", "mariadb")
    playhouse_scheme = "mysql+pool"
    driver = "pymysql"
    extra = "mysql"
    driver_defaults = MYSQL_DEFAULTS
    preflight_checks = ("lock_wait_timeout", "charset", "pgvector_elsewhere")
    default_port = 3306

    @classmethod
    def apply_timeouts(cls, params: dict[str, Any], pool: Any) -> None:
        params.setdefault("connect_timeout", pool.connect_timeout)
        cls.name_session(params, pool.app_name)
        if pool.statement_timeout > 0:
            params.setdefault("read_timeout", pool.statement_timeout + MYSQL_IO_MARGIN)
            params.setdefault("write_timeout", pool.statement_timeout + MYSQL_IO_MARGIN)

    @staticmethod
    def statement_timeout_sql(server_version: str, timeout: float) -> str:
        """The session's statement time limit, as the flavour named in ``server_version`` spells it."""
        if "mariadb" in server_version.lower():
            return f"SET SESSION max_statement_time = {timeout:g}"
        # MySQL limits SELECT statements only.
        return f"SET SESSION max_execution_time = {int(timeout * 1000)}"

    @classmethod
    def connection_fileno(cls, conn: Any) -> int | None:
        sock = getattr(conn, "_sock", None)
        return None if sock is None else int(sock.fileno())

    def probe_database(
        self, params: dict[str, Any], *, connect_timeout: int, statement_timeout: float, io_timeout: float
    ) -> peewee.Database:
        params["connect_timeout"] = connect_timeout
        params["read_timeout"] = io_timeout
        params["write_timeout"] = io_timeout
        params["program_name"] = f"{params.get('program_name') or 'api.db'}-health"
        return peewee.MySQLDatabase(self.database.database, thread_safe=False, **params)

    def server_facts(self) -> ServerFacts:
        variables = dict(self.database.execute_sql(MYSQL_PREFLIGHT_VARIABLES).fetchall())
        threads = "SHOW STATUS WHERE Variable_name = 'Threads_connected'"
        status = dict(self.database.execute_sql(threads).fetchall())
        facts = ServerFacts(
            max_connections=int(variables.get("max_connections", 0)) or None,
            current_connections=int(status.get("Threads_connected", 0)) or None,
        )
        facts.timeouts = {n: str(variables[n]) for n in MYSQL_PREFLIGHT_TIMEOUTS if n in variables}
        facts.settings = {n: str(variables[n]) for n in MYSQL_PREFLIGHT_SETTINGS if n in variables}
        return facts

    # -- clusters: roles, lag, Galera state -------------------------------------------------

    def read_role(self, cursor: Any) -> MemberRole:
        cursor.execute(GALERA_STATUS)
        wsrep = {str(k): str(v) for k, v in cursor.fetchall()}
        if wsrep.get("wsrep_cluster_size", "0") not in ("", "0"):
            return galera_role(wsrep)
        lag = self.replica_lag(cursor)
        if lag is not None:
            return MemberRole("replica", lag_seconds=lag)
        read_only = scalar(cursor, "SELECT @@global.read_only")
        if int(read_only or 0):
            return MemberRole("replica", lag_seconds=0.0)
        return MemberRole("primary")

    @staticmethod
    def replica_lag(cursor: Any) -> float | None:
        """Seconds_Behind_Source (or _Master); inf when replication is stopped; None when not a replica."""
        import pymysql

        for statement in REPLICA_STATUS:
            try:
                cursor.execute(statement)
            except pymysql.err.MySQLError as exc:
                if exc.args and exc.args[0] == MYSQL_SYNTAX_ERROR:  # an older server: the older spelling
                    continue
                return None  # no REPLICATION CLIENT privilege: read_only decides
            row = cursor.fetchone()
            if row is None:
                return None
            names = [col[0] for col in cursor.description]
            values = dict(zip(names, row))
            column = next((c for c in REPLICA_LAG_COLUMNS if c in values), None)
            lag = values.get(column) if column else None
            return float("inf") if lag is None else float(lag)
        return None

    def backend_id(self, cursor: Any) -> Any:
        return scalar(cursor, "SELECT CONNECTION_ID()")


def galera_role(wsrep: Mapping[str, str]) -> MemberRole:
    """A Galera node's role from its wsrep status; ``not_ready`` unless wsrep_ready=ON and Synced."""
    state = wsrep.get("wsrep_local_state_comment")
    size = int(wsrep.get("wsrep_cluster_size") or 0)
    problem = None
    if wsrep.get("wsrep_ready") != "ON":
        problem = "galera node not ready (wsrep_ready is not ON)"
    elif state != GALERA_SYNCED:
        problem = f"galera node is {state}, not {GALERA_SYNCED}"
    elif wsrep.get("wsrep_cluster_status", "Primary") != "Primary":
        problem = f"galera node is in a {wsrep.get('wsrep_cluster_status')} component, not the Primary one"
    return MemberRole("galera_node", state=state, cluster_size=size, not_ready=problem)
