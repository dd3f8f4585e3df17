"""The classification tables, row by row, and the operation-aware "already applied" rule.

The exceptions here are small stand-ins carrying exactly what the drivers expose
(psycopg2: ``pgcode``; PyMySQL: ``args == (errno, message)``; sqlite3: the message).
The integration tests (tests/integration/engines/test_error_classification.py) prove the
rows with real errors from real engines.
"""

from __future__ import annotations

import peewee
import pytest

from api.db.error_handler import (
    ALREADY_ABSENT,
    ALREADY_PRESENT,
    EXPECTED,
    MESSAGE_FALLBACKS,
    MYSQL_ERRNO,
    POSTGRES_SQLSTATE,
    POSTGRES_SQLSTATE_CLASS,
    SQLITE_MESSAGES,
    ErrorCategory,
    StandardErrorHandler,
    already_applied,
    classify_error,
)

C = ErrorCategory


class PgError(Exception):
    """What psycopg2 exposes: the SQLSTATE on ``pgcode``."""

    def __init__(self, pgcode: str, message: str = "error") -> None:
        super().__init__(message)
        self.pgcode = pgcode


class MyError(Exception):
    """What PyMySQL exposes: ``args == (errno, message)``."""


# Messages that accompany codes the server uses for several kinds of object.
PG_MESSAGES = {
    "42P07": 'relation "file" already exists',
    "42704": 'constraint "fk" of relation "t" does not exist',
}
MYSQL_MESSAGES = {1091: "Can't DROP CONSTRAINT `x`; check that it exists"}


@pytest.mark.parametrize(("code", "category"), sorted(POSTGRES_SQLSTATE.items()))
def test_postgres_sqlstate_row(code: str, category: ErrorCategory) -> None:
    exc = PgError(code, PG_MESSAGES.get(code, "some error"))
    info = classify_error(exc, "postgres")
    assert info.category == (C.MISSING_OBJECT if code == "42704" else category)
    assert info.code == code
    assert info.orig is exc


@pytest.mark.parametrize(("prefix", "category"), sorted(POSTGRES_SQLSTATE_CLASS.items()))
def test_postgres_sqlstate_class_row(prefix: str, category: ErrorCategory) -> None:
    code = prefix + "ZZZ"  # not in the exact table: the class decides
    assert code not in POSTGRES_SQLSTATE
    assert classify_error(PgError(code, "x"), "postgres").category == category


@pytest.mark.parametrize(("errno", "category"), sorted(MYSQL_ERRNO.items()))
def test_mysql_errno_row(errno: int, category: ErrorCategory) -> None:
    exc = MyError(errno, MYSQL_MESSAGES.get(errno, "some error"))
    info = classify_error(exc, "mysql")
    assert info.category == category
    assert info.code == str(errno)
    assert info.message == MYSQL_MESSAGES.get(errno, "some error")


SQLITE_SAMPLES = {
    r"duplicate column name": "duplicate column name: source_type",
    r"^table .+ already exists": "table file already exists",
    r"^index .+ already exists": "index idx already exists",
    r"no such column": "no such column: nope",
    r"no such table": "no such table: nope",
    r"no such index": "no such index: nope",
    r"no such (?:view|trigger)": "no such view: v",
    r"^(?:view|trigger) .+ already exists": "view v already exists",
    r"database is locked|database table is locked": "database is locked",
    r"datatype mismatch": "datatype mismatch",
    r"constraint failed": "UNIQUE constraint failed: t.a",
    r"readonly database": "attempt to write a readonly database",
    r"unable to open database file": "unable to open database file",
    r"syntax error|incomplete input": 'near "SELEC": syntax error',
    r"integer overflow|string or blob too big": "integer overflow",
}


@pytest.mark.parametrize(("pattern", "category"), SQLITE_MESSAGES)
def test_sqlite_message_row(pattern: str, category: ErrorCategory) -> None:
    exc = peewee.OperationalError(SQLITE_SAMPLES[pattern])
    assert classify_error(exc, "sqlite").category == category


FALLBACK_SAMPLES = {
    C.AUTHENTICATION: 'FATAL:  password authentication failed for user "app"',
    C.UNKNOWN_DATABASE: 'FATAL:  database "nope" does not exist',
    C.TOO_MANY_CONNECTIONS: "FATAL:  sorry, too many connections for role",
    C.CONNECTION_LOST: "server closed the connection unexpectedly",
    C.READ_ONLY: "connection to server at \"127.0.0.1\", port 5433 failed: session is read-only",
    C.DEADLOCK: "deadlock detected",
    C.LOCK_TIMEOUT: "canceling statement due to lock timeout",
    C.QUERY_CANCELED: "canceling statement due to statement timeout",
    C.SERIALIZATION_FAILURE: "could not serialize access due to concurrent update",
    C.TRANSACTION_ABORTED: "current transaction is aborted, commands ignored",
    C.PERMISSION_DENIED: "permission denied for table file",
    C.DUPLICATE_COLUMN: 'column "a" of relation "t" already exists',
    C.DUPLICATE_INDEX: 'index "i" already exists',
    C.DUPLICATE_TABLE: 'relation "t" already exists',
    C.DUPLICATE_OBJECT: 'type "mood" already exists',
    C.MISSING_COLUMN: 'column "a" does not exist',
    C.MISSING_INDEX: 'index "i" does not exist',
    C.MISSING_TABLE: "Table 'db.t' doesn't exist",
    C.MISSING_OBJECT: 'type "mood" does not exist',
    C.INCOMPATIBLE_TYPE: "column cannot be cast automatically to type integer",
    C.SYNTAX: "syntax error at or near SELEC",
}


@pytest.mark.parametrize(("pattern", "category"), MESSAGE_FALLBACKS)
def test_message_fallback_row(pattern: str, category: ErrorCategory) -> None:
    # No code at all: only the message can decide (psycopg2 connection errors look like this).
    message = FALLBACK_SAMPLES[category]
    if category == C.LOCK_TIMEOUT:
        message = "lock timeout"  # "canceling statement" alone means query_canceled, which follows
    assert classify_error(RuntimeError(message), "postgres").category == category


def test_every_fallback_row_has_a_sample() -> None:
    assert {c for _, c in MESSAGE_FALLBACKS} <= set(FALLBACK_SAMPLES)


@pytest.mark.parametrize(
    ("code", "message", "category"),
    [
        ("42P07", 'relation "file_source_type" already exists', C.DUPLICATE_TABLE),
        ("42P07", 'index "file_source_type" already exists', C.DUPLICATE_INDEX),
        ("42704", 'index "nope" does not exist', C.MISSING_INDEX),
        ("42704", 'type "nope" does not exist', C.MISSING_OBJECT),
    ],
)
def test_postgres_shared_codes_are_refined_by_message(
    code: str, message: str, category: ErrorCategory
) -> None:
    assert classify_error(PgError(code, message), "postgres").category == category


@pytest.mark.parametrize(
    ("message", "category"),
    [
        ("Can't DROP COLUMN `nope`; check that it exists", C.MISSING_COLUMN),
        ("Can't DROP INDEX `nope`; check that it exists", C.MISSING_INDEX),
        ("Can't DROP 'nope'; check that column/key exists", C.MISSING_OBJECT),
    ],
)
def test_mysql_1091_is_refined_by_message(message: str, category: ErrorCategory) -> None:
    assert classify_error(MyError(1091, message), "mysql").category == category


@pytest.mark.parametrize(
    ("code", "message", "statement", "category"),
    [
        ("42P07", 'relation "t_name" already exists', "CREATE INDEX t_name ON t (n)", C.DUPLICATE_INDEX),
        ("42P07", 'relation "t_name" already exists', "CREATE UNIQUE INDEX t_name ON t (n)",
         C.DUPLICATE_INDEX),
        ("42P07", 'relation "t" already exists', "CREATE TABLE t (a int)", C.DUPLICATE_TABLE),
        ("42P01", 'relation "t" does not exist', "DROP INDEX t", C.MISSING_INDEX),
    ],
)
def test_statement_settles_what_the_message_cannot(
    code: str, message: str, statement: str, category: ErrorCategory
) -> None:
    assert classify_error(PgError(code, message), "postgres", statement).category == category


def test_mysql_errno_wins_over_pymysql_sqlstate() -> None:
    exc = MyError(1064, "You have an error in your SQL syntax")
    exc.sqlstate = "42000"  # type: ignore[attr-defined]  # what PyMySQL 1.1 sets as well
    assert classify_error(exc, "mysql").category == C.SYNTAX


def test_peewee_wrapper_is_unwrapped_and_original_kept() -> None:
    driver = PgError("42701", 'column "a" of relation "t" already exists')
    wrapped = peewee.ProgrammingError(driver)
    wrapped.orig = driver  # what peewee's ExceptionWrapper sets
    info = classify_error(wrapped, "postgres")
    assert info.category == C.DUPLICATE_COLUMN and info.orig is wrapped and info.code == "42701"


def test_classify_starts_with_the_triple_of_the_design() -> None:
    assert StandardErrorHandler.classify(MyError(1060, "Duplicate column name 'a'"), "mysql")[:3] == (
        C.DUPLICATE_COLUMN, True, True
    )
    assert StandardErrorHandler.classify(MyError(1170, "BLOB/TEXT column used in key"), "mysql")[:3] == (
        C.INCOMPATIBLE_TYPE,
        True,
        False,
    )
    assert StandardErrorHandler.classify(MyError(1064, "syntax"), "mysql")[:3] == (C.SYNTAX, False, False)
    assert EXPECTED >= ALREADY_PRESENT | ALREADY_ABSENT


def test_message_never_shows_a_password() -> None:
    exc = RuntimeError("could not connect to postgresql://app:hunter2@db:5432/app password=hunter2")
    info = classify_error(exc)
    assert "hunter2" not in info.message and info.category == C.CONNECTION_LOST


def test_handle_migration_error_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="api.db.error_handler")
    assert StandardErrorHandler.handle_migration_error(
        MyError(1060, "Duplicate column name 'a'"), "t", "a", "add_column", "mysql"
    )
    assert caplog.records[-1].levelname == "INFO"
    assert StandardErrorHandler.handle_migration_error(
        MyError(1170, "BLOB/TEXT column 'a' used in key"), "t", "a", "add_index", "mysql"
    )
    assert caplog.records[-1].levelname == "WARNING"
    assert not StandardErrorHandler.handle_migration_error(
        MyError(1064, "You have an error in your SQL syntax"), "t", None, "sql", "mysql", sql="ALTER TABL t"
    )
    last = caplog.records[-1]
    assert last.levelname == "ERROR" and "ALTER TABL t" in last.getMessage()


@pytest.mark.parametrize(
    ("operation", "exc", "statement", "expected"),
    [
        ("add_column", MyError(1060, "Duplicate column name 'a'"), None, True),
        ("add_index", PgError("42P07", 'relation "i" already exists'), None, True),
        ("add_column", MyError(1054, "Unknown column 'a'"), None, False),
        ("drop_column", PgError("42703", 'column "a" of relation "t" does not exist'), None, True),
        ("drop_index", MyError(1091, "Can't DROP INDEX `i`; check that it exists"), None, True),
        ("drop_column", MyError(1060, "Duplicate column name 'a'"), None, False),
        ("alter_column_type", MyError(1060, "Duplicate column name 'a'"), None, False),
        ("sql", PgError("42P07", 'relation "t" already exists'), "CREATE TABLE t (a int)", True),
        ("sql", PgError("42P01", 'table "t" does not exist'), "DROP TABLE t", True),
        ("sql", PgError("42P07", 'relation "t" already exists'), "DROP TABLE t", False),
        ("sql", PgError("42701", 'column "a" already exists'), "UPDATE t SET a = 1", False),
        ("rename_column", MyError(1054, "Unknown column 'a'"), None, False),  # no db: cannot prove it
    ],
)
def test_already_applied_rules(
    operation: str, exc: BaseException, statement: str | None, expected: bool
) -> None:
    engine = "mysql" if isinstance(exc, MyError) else "postgres"
    assert already_applied(exc, operation, db_type=engine, statement=statement) is expected


def test_sql_already_applied_sees_past_leading_comments() -> None:
    exc = PgError("42P07", 'relation "doc" already exists')
    statement = "-- the documents table\n/* created by 001 */\n  CREATE TABLE doc (id int)"
    assert already_applied(exc, "sql", db_type="postgres", statement=statement)
    assert not already_applied(
        exc, "sql", db_type="postgres", statement="-- note\nINSERT INTO doc VALUES (1)"
    )
