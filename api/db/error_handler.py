"""StandardErrorHandler: classify driver errors by SQLSTATE, MySQL errno and message.

Classification is data: three tables map PostgreSQL SQLSTATE codes (exact code,
then two-character class), MySQL/MariaDB error numbers and SQLite messages to a
small :class:`ErrorCategory`, and an engine-neutral list of message patterns
catches what the codes miss (psycopg2 reports connection-time failures such as a
wrong password without a SQLSTATE). The original exception is never replaced:
:class:`ErrorInfo` keeps it on ``orig``.
"""

from __future__ import annotations

import logging
import re
from enum import Enum
from typing import Any, NamedTuple

from api.db.exceptions import SchemaConflict
from api.db.migrate.sqltext import strip_leading_comments
from api.db.redact import redact_text

logger = logging.getLogger(__name__)


class ErrorCategory(str, Enum):
    """What went wrong, independent of the engine that said it."""

    DUPLICATE_COLUMN = "duplicate_column"
    DUPLICATE_TABLE = "duplicate_table"
    DUPLICATE_INDEX = "duplicate_index"
    DUPLICATE_OBJECT = "duplicate_object"
    MISSING_COLUMN = "missing_column"
    MISSING_TABLE = "missing_table"
    MISSING_INDEX = "missing_index"
    MISSING_OBJECT = "missing_object"
    INCOMPATIBLE_TYPE = "incompatible_type"
    CONNECTION_LOST = "connection_lost"
    TOO_MANY_CONNECTIONS = "too_many_connections"
    AUTHENTICATION = "authentication"
    UNKNOWN_DATABASE = "unknown_database"
    LOCK_TIMEOUT = "lock_timeout"
    QUERY_CANCELED = "query_canceled"
    DEADLOCK = "deadlock"
    SERIALIZATION_FAILURE = "serialization_failure"
    PERMISSION_DENIED = "permission_denied"
    SYNTAX = "syntax"
    DATA_ERROR = "data_error"
    CONSTRAINT_VIOLATION = "constraint_violation"
    TRANSACTION_ABORTED = "transaction_aborted"
    READ_ONLY = "read_only"  # a standby or a demoted primary refused a write (failover in progress)
    UNSUPPORTED = "unsupported"
    TRANSACTION_CONTROL = "transaction_control"  # a migration tried to end its own transaction (refused)
    UNKNOWN = "unknown"


C = ErrorCategory

# "The object is already there": a migration that meets one of these while
# adding something has found its own work done (an adopted, untracked database).
ALREADY_PRESENT = frozenset({C.DUPLICATE_COLUMN, C.DUPLICATE_TABLE, C.DUPLICATE_INDEX, C.DUPLICATE_OBJECT})
# "The object is already gone": the expected outcome when dropping or renaming away.
ALREADY_ABSENT = frozenset({C.MISSING_COLUMN, C.MISSING_TABLE, C.MISSING_INDEX, C.MISSING_OBJECT})
# Known, explainable conditions a migration run may meet; everything else is unexpected.
EXPECTED = ALREADY_PRESENT | ALREADY_ABSENT | {C.INCOMPATIBLE_TYPE}
# Worth retrying: the same statement can succeed a moment later.
TRANSIENT = frozenset(
    {C.CONNECTION_LOST, C.TOO_MANY_CONNECTIONS, C.LOCK_TIMEOUT, C.DEADLOCK, C.SERIALIZATION_FAILURE,
     C.READ_ONLY}
)
# Retrying cannot help: a human must fix a setting.
FATAL_CONFIGURATION = frozenset({C.AUTHENTICATION, C.UNKNOWN_DATABASE, C.PERMISSION_DENIED})

# PostgreSQL SQLSTATE, exact codes (https://www.postgresql.org/docs/current/errcodes-appendix.html).
POSTGRES_SQLSTATE: dict[str, ErrorCategory] = {
    "42701": C.DUPLICATE_COLUMN,
    "42P07": C.DUPLICATE_TABLE,  # also an index name taken: refined by message
    "42710": C.DUPLICATE_OBJECT,  # constraint, extension, role, trigger
    "42723": C.DUPLICATE_OBJECT,  # duplicate_function
    "42P06": C.DUPLICATE_OBJECT,  # schema
    "42703": C.MISSING_COLUMN,
    "42P01": C.MISSING_TABLE,
    "42704": C.MISSING_OBJECT,  # index, type, constraint: refined by message
    "42804": C.INCOMPATIBLE_TYPE,  # datatype_mismatch
    "42846": C.INCOMPATIBLE_TYPE,  # cannot_coerce
    "42883": C.INCOMPATIBLE_TYPE,  # undefined_function: no operator for these types
    "28P01": C.AUTHENTICATION,
    "28000": C.AUTHENTICATION,
    "3D000": C.UNKNOWN_DATABASE,
    "55P03": C.LOCK_TIMEOUT,  # lock_not_available (lock_timeout, NOWAIT)
    "57014": C.QUERY_CANCELED,  # statement_timeout or pg_cancel_backend
    "25P03": C.CONNECTION_LOST,  # idle_in_transaction_session_timeout: the session is ended
    "57P05": C.CONNECTION_LOST,  # idle_session_timeout
    "57P01": C.CONNECTION_LOST,  # admin_shutdown / pg_terminate_backend
    "57P02": C.CONNECTION_LOST,  # crash_shutdown
    "57P03": C.CONNECTION_LOST,  # cannot_connect_now (starting up)
    "53300": C.TOO_MANY_CONNECTIONS,
    "40P01": C.DEADLOCK,
    "40001": C.SERIALIZATION_FAILURE,
    "42501": C.PERMISSION_DENIED,
    "42601": C.SYNTAX,
    "25P02": C.TRANSACTION_ABORTED,
    "25006": C.READ_ONLY,  # read_only_sql_transaction: a hot standby (or demoted primary) refused a write
    "0A000": C.UNSUPPORTED,
}

# PostgreSQL SQLSTATE classes, for codes not listed above.
POSTGRES_SQLSTATE_CLASS: dict[str, ErrorCategory] = {
    "08": C.CONNECTION_LOST,
    "22": C.DATA_ERROR,
    "23": C.CONSTRAINT_VIOLATION,
    "28": C.AUTHENTICATION,
    "40": C.SERIALIZATION_FAILURE,
}

# MySQL / MariaDB error numbers (server errors 1000-1999 and 3000+, client errors 2000-2999).
MYSQL_ERRNO: dict[int, ErrorCategory] = {
    1060: C.DUPLICATE_COLUMN,  # ER_DUP_FIELDNAME
    1050: C.DUPLICATE_TABLE,  # ER_TABLE_EXISTS_ERROR
    1061: C.DUPLICATE_INDEX,  # ER_DUP_KEYNAME
    1826: C.DUPLICATE_OBJECT,  # ER_FK_DUP_NAME
    1054: C.MISSING_COLUMN,  # ER_BAD_FIELD_ERROR
    1091: C.MISSING_OBJECT,  # ER_CANT_DROP_FIELD_OR_KEY: column or index, refined by message
    1146: C.MISSING_TABLE,  # ER_NO_SUCH_TABLE
    1051: C.MISSING_TABLE,  # ER_BAD_TABLE_ERROR (DROP TABLE)
    1176: C.MISSING_INDEX,  # ER_KEY_DOES_NOT_EXITS
    4092: C.MISSING_OBJECT,  # MariaDB ER_UNKNOWN_VIEW (DROP VIEW)
    1305: C.MISSING_OBJECT,  # ER_SP_DOES_NOT_EXIST (function, procedure)
    1360: C.MISSING_OBJECT,  # ER_TRG_DOES_NOT_EXIST
    1304: C.DUPLICATE_OBJECT,  # ER_SP_ALREADY_EXISTS
    1359: C.DUPLICATE_OBJECT,  # ER_TRG_ALREADY_EXISTS
    1170: C.INCOMPATIBLE_TYPE,  # BLOB/TEXT column in a key without a prefix length
    1071: C.INCOMPATIBLE_TYPE,  # specified key was too long
    3780: C.INCOMPATIBLE_TYPE,  # referencing and referenced columns incompatible
    1292: C.DATA_ERROR,  # truncated incorrect value
    1366: C.DATA_ERROR,  # incorrect value for column
    1264: C.DATA_ERROR,  # out of range
    1265: C.DATA_ERROR,  # data truncated
    1406: C.DATA_ERROR,  # data too long
    1062: C.CONSTRAINT_VIOLATION,  # duplicate entry
    1048: C.CONSTRAINT_VIOLATION,  # column cannot be null
    1451: C.CONSTRAINT_VIOLATION,  # foreign key: parent row
    1452: C.CONSTRAINT_VIOLATION,  # foreign key: child row
    2002: C.CONNECTION_LOST,  # can't connect through socket
    2003: C.CONNECTION_LOST,  # can't connect to server
    2006: C.CONNECTION_LOST,  # server has gone away
    2013: C.CONNECTION_LOST,  # lost connection during query
    2055: C.CONNECTION_LOST,  # lost connection (system error)
    1053: C.CONNECTION_LOST,  # server shutdown in progress
    1927: C.CONNECTION_LOST,  # MariaDB: connection was killed
    1040: C.TOO_MANY_CONNECTIONS,
    1290: C.READ_ONLY,  # running with --read-only (a replica, or a primary being demoted)
    1792: C.READ_ONLY,  # cannot execute statement in a READ ONLY transaction
    1205: C.LOCK_TIMEOUT,  # lock wait timeout exceeded (also lock_wait_timeout on DDL)
    3572: C.LOCK_TIMEOUT,  # NOWAIT: lock not available
    1317: C.QUERY_CANCELED,  # query execution was interrupted
    3024: C.QUERY_CANCELED,  # MySQL max_execution_time exceeded
    1969: C.QUERY_CANCELED,  # MariaDB max_statement_time exceeded
    1213: C.DEADLOCK,
    1045: C.AUTHENTICATION,  # access denied for user (wrong password)
    1044: C.PERMISSION_DENIED,  # access denied to database
    1142: C.PERMISSION_DENIED,  # command denied on table
    1227: C.PERMISSION_DENIED,  # needs SUPER or similar
    1049: C.UNKNOWN_DATABASE,
    1064: C.SYNTAX,
    1235: C.UNSUPPORTED,  # this version doesn't yet support
    1845: C.UNSUPPORTED,  # ALGORITHM not supported for this operation
    1846: C.UNSUPPORTED,  # ALGORITHM/LOCK not supported, try another
}

# SQLite reports no codes the Python driver exposes consistently: messages it is.
SQLITE_MESSAGES: list[tuple[str, ErrorCategory]] = [
    (r"duplicate column name", C.DUPLICATE_COLUMN),
    (r"^table .+ already exists", C.DUPLICATE_TABLE),
    (r"^index .+ already exists", C.DUPLICATE_INDEX),
    (r"no such column", C.MISSING_COLUMN),
    (r"no such table", C.MISSING_TABLE),
    (r"no such index", C.MISSING_INDEX),
    (r"no such (?:view|trigger)", C.MISSING_OBJECT),
    (r"^(?:view|trigger) .+ already exists", C.DUPLICATE_OBJECT),
    (r"database is locked|database table is locked", C.LOCK_TIMEOUT),
    (r"datatype mismatch", C.INCOMPATIBLE_TYPE),
    (r"constraint failed", C.CONSTRAINT_VIOLATION),
    (r"readonly database", C.PERMISSION_DENIED),
    (r"unable to open database file", C.UNKNOWN_DATABASE),
    (r"syntax error|incomplete input", C.SYNTAX),
    (r"integer overflow|string or blob too big", C.DATA_ERROR),
]

# Engine-neutral patterns, tried when no code matched (first match wins, so the
# specific "database ... does not exist" precedes the generic "does not exist").
MESSAGE_FALLBACKS: list[tuple[str, ErrorCategory]] = [
    (
        r"password authentication failed|access denied for user|authentication failed"
        r"|role \S+ does not exist",
        C.AUTHENTICATION,
    ),
    (r"database \S+ does not exist|unknown database", C.UNKNOWN_DATABASE),
    (r"too many connections|remaining connection slots are reserved", C.TOO_MANY_CONNECTIONS),
    (
        r"could not connect|connection refused|server closed the connection|terminating connection"
        r"|lost connection|gone away|can't connect|connection (?:is |already )?closed|no route to host"
        r"|could not translate host name|timeout expired|connection timed out|is the server running"
        r"|the database system is (?:starting up|shutting down|in recovery mode)",
        C.CONNECTION_LOST,
    ),
    # libpq's target_session_attrs=read-write found no writable member (yet: a failover is under way).
    (r"session is read-only|server is in hot standby mode|read-only transaction|read.only option",
     C.READ_ONLY),
    (r"deadlock", C.DEADLOCK),
    (r"lock timeout|lock wait timeout|could not obtain lock", C.LOCK_TIMEOUT),
    (r"statement timeout|canceling statement|query execution was interrupted", C.QUERY_CANCELED),
    (r"could not serialize", C.SERIALIZATION_FAILURE),
    (r"current transaction is aborted", C.TRANSACTION_ABORTED),
    (r"permission denied", C.PERMISSION_DENIED),
    (r"(?:column|field) .*already exists|duplicate column", C.DUPLICATE_COLUMN),
    (r"index .*already exists|duplicate key name", C.DUPLICATE_INDEX),
    (r"(?:table|relation) .*already exists", C.DUPLICATE_TABLE),
    (r"already exists", C.DUPLICATE_OBJECT),
    (r"column .*does not exist|unknown column", C.MISSING_COLUMN),
    (r"index .*does not exist", C.MISSING_INDEX),
    (r"(?:table|relation) .*does not exist|doesn't exist", C.MISSING_TABLE),
    (r"does not exist", C.MISSING_OBJECT),
    (r"cannot be cast|cannot cast|incompatible|datatype mismatch", C.INCOMPATIBLE_TYPE),
    (r"syntax error", C.SYNTAX),
]

_COMPILED_SQLITE = [(re.compile(p, re.IGNORECASE), c) for p, c in SQLITE_MESSAGES]
_COMPILED_FALLBACKS = [(re.compile(p, re.IGNORECASE), c) for p, c in MESSAGE_FALLBACKS]


class ErrorInfo(NamedTuple):
    """The classification of one exception, with the exception itself on ``orig``."""

    category: ErrorCategory
    is_expected: bool
    should_skip: bool
    code: str | None
    message: str
    orig: BaseException

    @property
    def is_transient(self) -> bool:
        return self.category in TRANSIENT


def driver_error(exc: BaseException) -> BaseException:
    """The DB-API exception behind a peewee wrapper (peewee keeps it on ``.orig``)."""
    seen = 0
    while getattr(exc, "orig", None) is not None and seen < 5:
        exc = exc.orig  # type: ignore[attr-defined]
        seen += 1
    return exc


def error_code(exc: BaseException) -> str | None:
    """SQLSTATE (PostgreSQL) or errno (MySQL) of a driver error, as a string, if it has one."""
    exc = driver_error(exc)
    # PyMySQL 1.1 also sets .sqlstate ("42000" for most errors), far coarser than the
    # errno in args[0]: the errno goes first, as the real engines showed.
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return str(args[0])
    for attr in ("pgcode", "sqlstate"):
        code = getattr(exc, attr, None)
        if code:
            return str(code)
    return None


def error_message(exc: BaseException) -> str:
    """The driver's message in one line, with credentials masked."""
    exc = driver_error(exc)
    args: tuple[Any, ...] = tuple(getattr(exc, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        text = str(args[1])
    else:
        text = str(exc)
    return redact_text(" ".join(text.split()))


# The first word of a PostgreSQL "does not exist" message, when it settles the kind of object.
_LEADING_KIND: dict[str, ErrorCategory] = {
    "index": C.MISSING_INDEX,
    "column": C.MISSING_COLUMN,
    "table": C.MISSING_TABLE,
    "relation": C.MISSING_TABLE,
    "constraint": C.MISSING_OBJECT,
    "type": C.MISSING_OBJECT,
    "extension": C.MISSING_OBJECT,
    "schema": C.MISSING_OBJECT,
    "function": C.MISSING_OBJECT,
    "sequence": C.MISSING_OBJECT,
    "trigger": C.MISSING_OBJECT,
}


def _refine(category: ErrorCategory, message: str) -> ErrorCategory:
    """Codes shared by several object kinds (42P07, 42704, 1091) are told apart by the message."""
    lowered = message.lower()
    if category in (C.DUPLICATE_TABLE, C.DUPLICATE_OBJECT) and re.search(r"\bindex\b", lowered):
        return C.DUPLICATE_INDEX
    if category == C.MISSING_OBJECT:
        # MySQL 1091 says which kind in "Can't DROP COLUMN/INDEX `x`", or "column/key" when it cannot tell.
        if re.search(r"drop column\b", lowered):
            return C.MISSING_COLUMN
        if re.search(r"drop (?:index|key)\b", lowered):
            return C.MISSING_INDEX
        if "column/key" in lowered:
            return C.MISSING_OBJECT
        # PostgreSQL names the missing kind first: 'constraint "fk" of relation "t" does not exist'.
        lead = re.match(r"\W*(\w+)", lowered)
        if lead and lead.group(1) in _LEADING_KIND:
            return _LEADING_KIND[lead.group(1)]
        if re.search(r"\bindex\b|\bkey\b", lowered):
            return C.MISSING_INDEX
        if re.search(r"\bcolumn\b|\bfield\b", lowered):
            return C.MISSING_COLUMN
        if re.search(r"\btable\b|\brelation\b", lowered):
            return C.MISSING_TABLE
    return category


# A statement that creates or drops an index turns a table/object category into the index one.
_INDEX_STATEMENT = re.compile(r"^\s*(?:create\s+(?:unique\s+)?index|drop\s+index)\b", re.IGNORECASE)
_AS_INDEX = {
    C.DUPLICATE_TABLE: C.DUPLICATE_INDEX,
    C.DUPLICATE_OBJECT: C.DUPLICATE_INDEX,
    C.MISSING_TABLE: C.MISSING_INDEX,
    C.MISSING_OBJECT: C.MISSING_INDEX,
}


def _refine_by_statement(category: ErrorCategory, statement: str) -> ErrorCategory:
    if _INDEX_STATEMENT.match(statement):
        return _AS_INDEX.get(category, category)
    return category


def _match(patterns: list[tuple[re.Pattern[str], ErrorCategory]], message: str) -> ErrorCategory | None:
    for pattern, category in patterns:
        if pattern.search(message):
            return category
    return None


# Which code tables apply to errors of each engine name: PostgreSQL reports SQLSTATEs only;
# MySQL/MariaDB errnos first, then a SQLSTATE (PyMySQL sets both); unknown engines try both.
_SQLSTATE = "sqlstate"
_ERRNO = "errno"
_ALL_CODES = (_ERRNO, _SQLSTATE)
_CODE_SPACES: dict[str, tuple[str, ...]] = {"postgres": (_SQLSTATE,), "postgresql": (_SQLSTATE,)}
# Engines whose driver gives messages, not codes: SQLite (and an engine not named).
_MESSAGE_ENGINES = frozenset({"sqlite", ""})


def _by_code(code: str | None, spaces: tuple[str, ...]) -> ErrorCategory | None:
    """The category of ``code`` in the first of ``spaces`` that knows it."""
    if code is None:
        return None
    category = None
    if _ERRNO in spaces and code.isdigit():
        category = MYSQL_ERRNO.get(int(code))
    if category is None and _SQLSTATE in spaces and len(code) == 5:
        category = POSTGRES_SQLSTATE.get(code) or POSTGRES_SQLSTATE_CLASS.get(code[:2])
    return category


def _own_category(exc: BaseException) -> ErrorCategory | None:
    """The category a :class:`SchemaConflict` carries (it is decided from the catalog, not a message)."""
    if not isinstance(exc, SchemaConflict):
        return None
    try:
        return ErrorCategory(exc.category)
    except ValueError:
        return ErrorCategory.UNKNOWN


class StandardErrorHandler:
    """Classify database errors as expected or unexpected, and log them at the right level."""

    @staticmethod
    def classify(exc: BaseException, db_type: str | None = None, statement: str | None = None) -> ErrorInfo:
        """Classify ``exc`` raised by ``db_type`` (``postgres``, ``mysql``, ``mariadb``, ``sqlite``).

        ``statement``, when known, settles what the message cannot: PostgreSQL reports
        an index name already taken as 'relation "x" already exists' (42P07).
        """
        own = _own_category(exc)
        if own is not None:  # the package's own typed error already says what it is
            return ErrorInfo(own, own in EXPECTED, False, None, error_message(exc), exc)
        code = error_code(exc)
        message = error_message(exc)
        category = _by_code(code, _CODE_SPACES.get((db_type or "").lower(), _ALL_CODES))
        if category is None and (db_type or "").lower() in _MESSAGE_ENGINES:
            category = _match(_COMPILED_SQLITE, message)
        if category is None:
            category = _match(_COMPILED_FALLBACKS, message)
        category = _refine(category or C.UNKNOWN, message)
        if statement is not None:
            category = _refine_by_statement(category, statement)
        expected = category in EXPECTED
        skip = category in ALREADY_PRESENT or category in ALREADY_ABSENT
        return ErrorInfo(category, expected, skip, code, message, exc)

    @classmethod
    def handle_migration_error(
        cls,
        exc: BaseException,
        table: str,
        column: str | None,
        operation: str,
        db_type: str | None = None,
        sql: str | None = None,
    ) -> bool:
        """Log ``exc`` met while running ``operation`` on ``table.column``; True when it is safe to go on.

        Expected "already done" errors log at INFO, other expected ones at WARNING,
        unexpected ones at ERROR with the failing statement.
        """
        info = cls.classify(exc, db_type, sql)
        target = f"{table}.{column}" if column else table
        if _done_by(info.category, operation):
            logger.info("%s %s: already done (%s), skipping", operation, target, info.category.value)
            return True
        if info.is_expected and not info.should_skip:
            logger.warning("%s %s: %s: %s", operation, target, info.category.value, info.message)
            return True
        logger.error(
            "%s %s failed (%s, code %s): %s; statement: %s",
            operation,
            target,
            info.category.value,
            info.code,
            info.message,
            redact_text(sql) if sql else "n/a",
        )
        return False


def _done_by(category: ErrorCategory, operation: str) -> bool:
    """Does ``category`` mean "already done" for ``operation``? An add meeting a missing table does not."""
    op = operation.lower()
    if op.startswith(("add_", "create_", "alter_add_")):
        return category in ALREADY_PRESENT
    if op.startswith("drop_"):
        return category in ALREADY_ABSENT
    if op.startswith("rename_"):
        return False  # only introspection can tell a finished rename from a typo: see already_applied()
    return category in ALREADY_PRESENT or category in ALREADY_ABSENT


def classify_error(exc: BaseException, db_type: str | None = None, statement: str | None = None) -> ErrorInfo:
    """The package's own shortcut for :meth:`StandardErrorHandler.classify`, the public way to classify."""
    return StandardErrorHandler.classify(exc, db_type, statement)


def describe(exc: Any) -> str:
    """``category: message`` for a log line or an exception text, credentials masked."""
    info = StandardErrorHandler.classify(exc)
    return f"{info.category.value}: {info.message}"


# -- "already applied": the operation-aware view of an error --------------------

# Statements that add something: "already present" means their work is done.
_ADDING_SQL = re.compile(r"^\s*(?:create\b|alter\s+table\s+\S+\s+add\b)", re.IGNORECASE)
# Statements that remove something: "already absent" means their work is done.
_REMOVING_SQL = re.compile(r"^\s*(?:drop\b|alter\s+table\s+\S+\s+drop\b)", re.IGNORECASE)


def _lower_names(names: Any) -> set[str]:
    return {str(name).lower() for name in names}


def already_applied(
    exc: BaseException,
    operation: str,
    *,
    db: Any = None,
    db_type: str | None = None,
    table: str | None = None,
    old_name: str | None = None,
    new_name: str | None = None,
    statement: str | None = None,
) -> bool:
    """True when ``exc``, raised by ``operation``, proves that the operation's work is already done.

    ``add_*`` / ``create_*`` meeting a duplicate, ``drop_*`` meeting a missing object,
    ``rename_column`` / ``rename_table`` where the old name is gone and the new one is
    there (checked by introspecting ``db``, since the error alone cannot tell a finished
    rename from a typo), and ``sql`` statements judged by their leading verb.
    """
    op = operation.lower()
    if op in ("rename_column", "rename_table"):
        return _rename_done(op, db, table, old_name, new_name)
    info = StandardErrorHandler.classify(exc, db_type, statement)
    if op == "sql":
        return _sql_done(info.category, statement)
    if op.startswith(("add_", "create_", "alter_add_")):
        return info.category in ALREADY_PRESENT
    if op.startswith("drop_"):
        return info.category in ALREADY_ABSENT
    return False


def _rename_done(op: str, db: Any, table: str | None, old_name: str | None, new_name: str | None) -> bool:
    """A rename is done when the old name is gone and the new one is there (read from the catalog)."""
    if db is None or old_name is None or new_name is None or (op == "rename_column" and table is None):
        return False
    try:
        if op == "rename_column":
            present = _lower_names(c.name for c in db.get_columns(table))
        else:
            present = _lower_names(db.get_tables())
    except Exception as introspection_error:  # classify, log, and answer "not proven"
        logger.warning(
            "could not introspect %s to check a finished rename: %s",
            table or "tables",
            describe(introspection_error),
        )
        return False
    return old_name.lower() not in present and new_name.lower() in present


def _sql_done(category: ErrorCategory, statement: str | None) -> bool:
    """Raw SQL is judged by its leading verb: an add meeting a duplicate, a drop meeting a missing object."""
    statement = strip_leading_comments(statement) if statement else statement
    if statement and _ADDING_SQL.match(statement):
        return category in ALREADY_PRESENT
    if statement and _REMOVING_SQL.match(statement):
        return category in ALREADY_ABSENT
    return False
