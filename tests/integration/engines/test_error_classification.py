"""Each classification row proven by a real error from a real engine.

For every category an engine can produce on demand, a scenario provokes it and
the test asserts what ``classify_error`` says. Not provoked (no server here
produces them on demand): TOO_MANY_CONNECTIONS (would starve the shared servers)
and AUTHENTICATION on PostgreSQL (the servers here use trust authentication).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest

from api.db import connect
from api.db.error_handler import ErrorCategory, classify_error

from engines import Engine, admin_cursor

C = ErrorCategory
Scenario = Callable[[Any, Engine, str], BaseException]


def _raises(fn: Callable[[], Any]) -> BaseException:
    try:
        fn()
    except Exception as exc:  # the error under test
        return exc
    raise AssertionError("the scenario did not raise")


def _setup(db: Any) -> None:
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name VARCHAR(20), n INTEGER, body TEXT)")
    db.execute_sql("CREATE UNIQUE INDEX t_name ON t (name)")
    db.execute_sql("INSERT INTO t (id, name, n) VALUES (1, 'a', 1), (2, 'b', 2)")


# Statements classified with the statement passed along (what migrate_db does).
STATEMENT_AWARE: dict[BaseException, str] = {}


def _sql(statement: str) -> Scenario:
    def scenario(db: Any, engine: Engine, url: str) -> BaseException:
        _setup(db)
        exc = _raises(lambda: db.execute_sql(statement))
        STATEMENT_AWARE[exc] = statement
        return exc

    return scenario


@contextlib.contextmanager
def _second(engine: Engine, url: str) -> Iterator[Any]:
    with admin_cursor(engine, url) as cur:
        yield cur


def _row_lock(engine: Engine, url: str, db: Any, statement: str) -> BaseException:
    """A second session holds row 1 in an open transaction; ``statement`` then waits for it."""
    _setup(db)
    with _second(engine, url) as other:
        other.execute("BEGIN")
        other.execute("UPDATE t SET n = 10 WHERE id = 1")
        try:
            return _raises(lambda: db.execute_sql(statement))
        finally:
            other.execute("ROLLBACK")


def _deadlock(db: Any, engine: Engine, url: str) -> BaseException:
    _setup(db)
    errors: list[BaseException] = []
    first_locked = threading.Event()
    second_locked = threading.Event()

    def other_session() -> None:
        with _second(engine, url) as other:
            other.execute("BEGIN")
            other.execute("UPDATE t SET n = 20 WHERE id = 2")
            second_locked.set()
            first_locked.wait(10)
            try:
                other.execute("UPDATE t SET n = 21 WHERE id = 1")
            except Exception as exc:  # one of the two sessions is the victim
                errors.append(exc)
            finally:
                other.execute("ROLLBACK")

    worker = threading.Thread(target=other_session, name="deadlock-peer")
    worker.start()
    try:
        second_locked.wait(10)
        with db.atomic():
            db.execute_sql("UPDATE t SET n = 10 WHERE id = 1")
            first_locked.set()
            db.execute_sql("UPDATE t SET n = 11 WHERE id = 2")
    except Exception as exc:  # this session was the victim
        errors.append(exc)
    finally:
        first_locked.set()
        worker.join(30)
    assert errors, "no session was chosen as the deadlock victim"
    return errors[0]


def _pg_serialization(db: Any, engine: Engine, url: str) -> BaseException:
    _setup(db)
    with _second(engine, url) as other:
        other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        other.execute("SELECT n FROM t WHERE id = 1")
        db.execute_sql("UPDATE t SET n = 5 WHERE id = 1")  # commits (autocommit)
        try:
            return _raises(lambda: other.execute("UPDATE t SET n = 6 WHERE id = 1"))
        finally:
            other.execute("ROLLBACK")


def _pg_permission(db: Any, engine: Engine, url: str) -> BaseException:
    _setup(db)
    role = "apidb_np_" + uuid.uuid4().hex[:8]
    db.execute_sql(f"CREATE ROLE {role}")
    try:
        with db.atomic():
            db.execute_sql(f"SET LOCAL ROLE {role}")
            return _raises(lambda: db.execute_sql("SELECT * FROM t"))
    finally:
        db.execute_sql(f"DROP ROLE {role}")


def _pg_transaction_aborted(db: Any, engine: Engine, url: str) -> BaseException:
    _setup(db)
    with db.atomic():
        _raises(lambda: db.execute_sql("SELECT nope FROM t"))
        return _raises(lambda: db.execute_sql("SELECT 1"))


def _on_driver(db: Any, sql: str) -> None:
    """``sql`` on the raw driver connection: the pool would replace a dead connection before a statement."""
    cursor = db.connection().cursor()
    try:
        cursor.execute(sql)
    finally:
        cursor.close()


def _pg_connection_lost(db: Any, engine: Engine, url: str) -> BaseException:
    pid = db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
    with _second(engine, url) as other:
        other.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return _raises(lambda: _on_driver(db, "SELECT 1"))


def _mysql_connection_lost(db: Any, engine: Engine, url: str) -> BaseException:
    conn_id = db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
    with _second(engine, url) as other:
        other.execute(f"KILL {int(conn_id)}")
    return _raises(lambda: _on_driver(db, "SELECT 1"))


def _unknown_database(db: Any, engine: Engine, url: str) -> BaseException:
    missing = url.rsplit("/", 1)[0] + "/apidb_missing_" + uuid.uuid4().hex[:6]
    if engine.family == "sqlite":  # connect() refuses a missing directory itself: ask the driver directly
        import peewee

        return _raises(peewee.SqliteDatabase("/nonexistent-dir-" + uuid.uuid4().hex[:6] + "/x.db").connect)
    other = connect(missing)
    return _raises(other.connect)


def _mysql_user(db: Any, engine: Engine, url: str, password: str) -> tuple[str, str]:
    user = "apidb_u_" + uuid.uuid4().hex[:8]
    db.execute_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY '{password}'")
    return user, url.replace("root@", f"{user}:{password}@")


def _mysql_authentication(db: Any, engine: Engine, url: str) -> BaseException:
    user, good = _mysql_user(db, engine, url, "Right-pw-1")
    try:
        other = connect(good.replace("Right-pw-1", "Wrong-pw-2"))
        return _raises(other.connect)
    finally:
        db.execute_sql(f"DROP USER '{user}'@'%%'")


def _mysql_permission(db: Any, engine: Engine, url: str) -> BaseException:
    user, other_url = _mysql_user(db, engine, url, "Some-pw-1")
    try:
        other = connect(other_url)
        return _raises(other.connect)  # no grant on this database: 1044
    finally:
        db.execute_sql(f"DROP USER '{user}'@'%%'")


def _sqlite_lock(db: Any, engine: Engine, url: str) -> BaseException:
    import sqlite3

    _setup(db)
    holder = sqlite3.connect(db.database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        waiter = connect(url, timeout=0.1)
        return _raises(lambda: waiter.execute_sql("UPDATE t SET n = 3"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()


POSTGRES: dict[ErrorCategory, Scenario] = {
    C.DUPLICATE_COLUMN: _sql("ALTER TABLE t ADD COLUMN name VARCHAR(5)"),
    C.DUPLICATE_TABLE: _sql("CREATE TABLE t (id INTEGER)"),
    C.DUPLICATE_INDEX: _sql("CREATE INDEX t_name ON t (n)"),
    C.DUPLICATE_OBJECT: _sql("ALTER TABLE t ADD CONSTRAINT t_pkey CHECK (n > 0)"),
    C.MISSING_COLUMN: _sql("ALTER TABLE t DROP COLUMN nope"),
    C.MISSING_TABLE: _sql("SELECT * FROM nope"),
    C.MISSING_INDEX: _sql("DROP INDEX nope"),
    C.MISSING_OBJECT: _sql("ALTER TABLE t DROP CONSTRAINT nope"),
    C.INCOMPATIBLE_TYPE: _sql("ALTER TABLE t ALTER COLUMN name TYPE INTEGER"),
    C.SYNTAX: _sql("SELEC 1"),
    C.DATA_ERROR: _sql("SELECT 'abc'::integer"),
    C.CONSTRAINT_VIOLATION: _sql("INSERT INTO t (id, name) VALUES (3, 'a')"),
    C.QUERY_CANCELED: _sql("SET statement_timeout = 50; SELECT pg_sleep(2)"),
    C.LOCK_TIMEOUT: lambda db, e, u: _row_lock(
        e, u, db, "SET lock_timeout = 100; UPDATE t SET n = 2 WHERE id = 1"
    ),
    C.DEADLOCK: _deadlock,
    C.SERIALIZATION_FAILURE: _pg_serialization,
    C.PERMISSION_DENIED: _pg_permission,
    C.TRANSACTION_ABORTED: _pg_transaction_aborted,
    C.CONNECTION_LOST: _pg_connection_lost,
    C.UNKNOWN_DATABASE: _unknown_database,
    C.UNSUPPORTED: _sql("CREATE VIEW v AS SELECT n FROM t; ALTER TABLE t ALTER COLUMN n TYPE BIGINT"),
}

MYSQL: dict[ErrorCategory, Scenario] = {
    C.DUPLICATE_COLUMN: _sql("ALTER TABLE t ADD COLUMN name VARCHAR(5)"),
    C.DUPLICATE_TABLE: _sql("CREATE TABLE t (id INTEGER)"),
    C.DUPLICATE_INDEX: _sql("CREATE INDEX t_name ON t (n)"),
    C.MISSING_COLUMN: _sql("ALTER TABLE t DROP COLUMN nope"),
    C.MISSING_TABLE: _sql("SELECT * FROM nope"),
    C.MISSING_INDEX: _sql("DROP INDEX nope ON t"),
    C.INCOMPATIBLE_TYPE: _sql("CREATE TABLE k (b TEXT PRIMARY KEY)"),
    C.SYNTAX: _sql("SELEC 1"),
    C.DATA_ERROR: _sql("INSERT INTO t (id, name, n) VALUES (3, 'c', 'abc')"),
    C.CONSTRAINT_VIOLATION: _sql("INSERT INTO t (id, name) VALUES (3, 'a')"),
    # MariaDB stops BENCHMARK() and aggregates early without an error; a sort raises 1969.
    C.QUERY_CANCELED: _sql(
        "SET STATEMENT max_statement_time = 0.05 "
        "FOR SELECT seq FROM seq_1_to_100000000 ORDER BY RAND() LIMIT 1"
    ),
    C.LOCK_TIMEOUT: lambda db, e, u: _row_lock(
        e, u, db, "SET STATEMENT innodb_lock_wait_timeout = 1 FOR UPDATE t SET n = 2 WHERE id = 1"
    ),
    C.DEADLOCK: _deadlock,
    C.PERMISSION_DENIED: _mysql_permission,
    C.AUTHENTICATION: _mysql_authentication,
    C.CONNECTION_LOST: _mysql_connection_lost,
    C.UNKNOWN_DATABASE: _unknown_database,
    C.UNSUPPORTED: _sql("SELECT * FROM t WHERE id IN (SELECT id FROM t LIMIT 1)"),
}

SQLITE: dict[ErrorCategory, Scenario] = {
    C.DUPLICATE_COLUMN: _sql("ALTER TABLE t ADD COLUMN name VARCHAR(5)"),
    C.DUPLICATE_TABLE: _sql("CREATE TABLE t (id INTEGER)"),
    C.DUPLICATE_INDEX: _sql("CREATE INDEX t_name ON t (n)"),
    C.MISSING_COLUMN: _sql("ALTER TABLE t DROP COLUMN nope"),
    C.MISSING_TABLE: _sql("SELECT * FROM nope"),
    C.MISSING_INDEX: _sql("DROP INDEX nope"),
    C.INCOMPATIBLE_TYPE: _sql("INSERT INTO t (id) VALUES ('abc')"),
    C.SYNTAX: _sql("SELEC 1"),
    C.DATA_ERROR: _sql("SELECT abs(-9223372036854775807 - 1)"),
    C.CONSTRAINT_VIOLATION: _sql("INSERT INTO t (id, name) VALUES (3, 'a')"),
    C.LOCK_TIMEOUT: _sqlite_lock,
    C.UNKNOWN_DATABASE: _unknown_database,
}

SCENARIOS = {"postgres": POSTGRES, "mysql": MYSQL, "sqlite": SQLITE}
CASES = [(family, category) for family, table in SCENARIOS.items() for category in table]


@pytest.mark.parametrize(("family", "category"), CASES, ids=[f"{f}-{c.value}" for f, c in CASES])
def test_real_error_is_classified(family: str, category: ErrorCategory) -> None:
    from engines import get_engine, required_engines

    engine = get_engine(family)
    if not engine.available:
        if family in required_engines():
            pytest.fail(f"engine {family} unavailable: {engine.reason} (required by REQUIRE_ENGINES)")
        pytest.skip(f"engine {family} unavailable: {engine.reason}")
    url = engine.create_database()
    db = connect(url)
    try:
        exc = SCENARIOS[family][category](db, engine, url)
        info = classify_error(exc, family, STATEMENT_AWARE.pop(exc, None))
        assert info.category == category, f"{type(exc).__name__}: code {info.code}: {info.message}"
        assert info.orig is exc
    finally:
        with contextlib.suppress(peewee.DatabaseError):
            if hasattr(db, "close_all"):
                db.close_all()
            else:
                db.close()
        engine.drop_database(url)
