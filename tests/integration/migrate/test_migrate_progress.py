"""migrate_db's progress, transactions and targets, on real engines: each test is a defect it fixed.

* progress is data (completed_operations, owner, progress_at), never parsed out of error_message;
* SQLite ``atomic=False`` keeps completed operations and records a true count;
* transaction control inside a transactional migration is refused before it reaches the server;
* a lost connection is a typed ``connection_lost`` error, with no history written without the lock;
* a target that refuses writes is named before locking, while the no-op fast path still answers.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import peewee
import pytest
from peewee import IntegerField

from api.db import Migration, MigrationError, migrate_db
from api.db.exceptions import ReadOnlyDatabase
from api.db.migrate.tracker import ERROR_MAX_LENGTH, HISTORY_TABLE, MigrationTracker

from engines import Engine, admin_cursor, history, statements


def tables(db: Any) -> set[str]:
    with db.connection_context():
        return set(db.get_tables())


def rows(db: Any, sql: str) -> list[tuple[Any, ...]]:
    with db.connection_context():
        return [tuple(r) for r in db.execute_sql(sql).fetchall()]


CREATE_DOC = ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))"))
NEW = ("add_n", lambda m: m.add_column("doc", "n", IntegerField(null=True)))


# -- progress as data ---------------------------------------------------------------------


@pytest.mark.engines("mysql", "postgres", "sqlite")
def test_resume_point_survives_a_long_failing_statement(db: Any) -> None:
    """The old marker followed the error text, cut at 4,000 characters: the next boot replayed all."""
    long_statement = "INSERT INTO later (id) VALUES (1) /* " + "x" * 5000 + " */"

    def widen(m: Any) -> None:
        m.add_column("doc", "x", IntegerField(null=True))
        m.sql(long_statement)

    migrations = [CREATE_DOC, Migration("widen", widen, atomic=False)]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    assert caught.value.migration == "widen" and len(caught.value.completed) == 1
    row = history(db)["widen"]
    assert row.status == "failed" and row.completed_operations == 1 and row.owner and row.progress_at
    assert len(row.error_message) == ERROR_MAX_LENGTH and "completed operations" not in row.error_message

    db.execute_sql("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    with statements(db) as seen:
        report = migrate_db(db, migrations)
    assert report.applied == ["widen"]
    assert not [s for s in seen if "ADD COLUMN" in s.upper()], "the completed add_column was replayed"
    row = history(db)["widen"]
    assert row.status == "success" and row.completed_operations == 2
    assert rows(db, "SELECT id FROM later") == [(1,)]


class OldHistory(peewee.Model):
    """migration_history as releases before the progress columns made it."""

    migration_name = peewee.CharField(max_length=255, unique=True)
    applied_at = peewee.DateTimeField(null=True)
    status = peewee.CharField(max_length=16)
    error_message = peewee.TextField(null=True)
    duration_ms = peewee.FloatField(null=True)
    db_type = peewee.CharField(max_length=16, null=True)
    checksum = peewee.CharField(max_length=64, null=True)
    installed_by = peewee.CharField(max_length=255, null=True)

    class Meta:
        table_name = HISTORY_TABLE


def test_an_older_history_table_gets_the_progress_columns(db: Any) -> None:
    with db.bind_ctx([OldHistory]), db.connection_context():
        db.create_tables([OldHistory])
        OldHistory.create(migration_name="create_doc", status="success")
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")
    report = migrate_db(db, [CREATE_DOC, NEW])
    assert report.applied == ["add_n"] and report.pending_before == ["add_n"]
    with db.connection_context():
        names = {c.name for c in db.get_columns(HISTORY_TABLE)}
        assert {"completed_operations", "owner", "progress_at"} <= names
        MigrationTracker(db)._add_column("owner")  # another booter added it first: not an error
    rows_now = history(db)
    assert rows_now["create_doc"].status == "success" and rows_now["create_doc"].completed_operations is None
    owner = rows_now["add_n"].owner
    assert rows_now["add_n"].completed_operations == 1
    assert owner.startswith("session:") if report.lock == "advisory" else len(owner) == 32  # a lease token


@pytest.mark.engines("mysql")
def test_a_running_row_whose_session_is_gone_is_resumed(db: Any) -> None:
    """Under a session lock that we hold, the writer of a running row no longer holds it."""
    migrations = [
        CREATE_DOC,
        ("widen", lambda m: (m.add_column("doc", "x", IntegerField(null=True)),
                             m.add_column("doc", "y", IntegerField(null=True)))),
    ]  # fmt: skip
    migrate_db(db, migrations[:1])
    db.execute_sql("ALTER TABLE doc ADD COLUMN x INTEGER NULL")
    with db.connection_context():
        MigrationTracker(db).record_migration("widen", "running", completed=1, owner="session:999999")
    with statements(db) as seen:
        report = migrate_db(db, migrations)
    assert report.applied == ["widen"] and not [s for s in seen if "`x`" in s and "ADD" in s.upper()]
    assert history(db)["widen"].completed_operations == 2


# -- SQLite atomic=False ---------------------------------------------------------------------


@pytest.mark.engines("sqlite", "postgres", "mysql")
def test_non_atomic_backfill_keeps_completed_steps_and_a_true_count(db: Any) -> None:
    """SQLite: the lock's transaction made the migration a savepoint; a failure undid a recorded step."""

    def backfill(m: Any) -> None:
        m.sql("INSERT INTO item (id, name) VALUES (1, 'a')")
        m.sql("INSERT INTO item (id, name) SELECT 2, name FROM source")

    migrations = [
        ("create_item", lambda m: m.sql("CREATE TABLE item (id INTEGER PRIMARY KEY, name VARCHAR(10))")),
        Migration("backfill", backfill, atomic=False),
    ]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    assert caught.value.category == "missing_table" and len(caught.value.completed) == 1
    assert rows(db, "SELECT id FROM item ORDER BY id") == [(1,)]  # step 1 stayed applied
    assert history(db)["backfill"].completed_operations == 1
    db.execute_sql("CREATE TABLE source (name VARCHAR(10))")
    db.execute_sql("INSERT INTO source (name) VALUES ('b')")
    assert migrate_db(db, migrations).applied == ["backfill"]
    assert rows(db, "SELECT id, name FROM item ORDER BY id") == [(1, "a"), (2, "b")]  # each step once


@pytest.mark.engines("sqlite")
def test_non_atomic_sqlite_migration_runs_outside_any_transaction(db: Any) -> None:
    seen: list[bool] = []

    def vacuum(m: Any) -> None:
        seen.append(m.db.connection().in_transaction)
        m.sql("VACUUM")  # SQLite refuses VACUUM inside a transaction

    report = migrate_db(db, [CREATE_DOC, Migration("vacuum", vacuum, atomic=False)])
    assert report.applied == ["create_doc", "vacuum"] and seen == [False]


# -- transaction control in a transactional migration ------------------------------------------


def _commit_in_nested_transaction(m: Any) -> None:
    with m.db.transaction() as txn:
        txn.commit()


def _swallowed_commit(m: Any) -> None:
    try:
        m.sql("COMMIT")
    except Exception:  # noqa: BLE001 - the migration hides the refusal; the runner still reports it
        pass


CONTROL: dict[str, tuple[Callable[[Any], None], str]] = {
    "sql_commit": (lambda m: m.sql("COMMIT"), "COMMIT"),
    "sql_rollback": (lambda m: m.sql("rollback"), "rollback"),
    "sql_begin": (lambda m: m.sql("BEGIN"), "BEGIN"),
    "sql_end": (lambda m: m.sql("  -- done\nEND"), "END"),
    "sql_start_transaction": (lambda m: m.sql("START TRANSACTION"), "START TRANSACTION"),
    "execute_sql_commit": (lambda m: m.db.execute_sql("COMMIT"), "COMMIT"),
    "db_commit": (lambda m: m.db.commit(), "db.commit()"),
    "db_rollback": (lambda m: m.db.rollback(), "db.rollback()"),
    "nested_transaction_commit": (_commit_in_nested_transaction, "db.commit()"),
    "swallowed": (_swallowed_commit, "COMMIT"),
}


@pytest.mark.engines("postgres", "sqlite")
@pytest.mark.parametrize("case", sorted(CONTROL))
def test_transaction_control_is_refused_before_it_reaches_the_server(db: Any, case: str) -> None:
    control, shown = CONTROL[case]

    def b(m: Any) -> None:
        m.sql("CREATE TABLE b_tbl (id INTEGER PRIMARY KEY)")
        control(m)
        m.sql("INSERT INTO b_tbl (id) VALUES (1)")

    migrations = [
        ("a", lambda m: m.sql("CREATE TABLE a_tbl (id INTEGER PRIMARY KEY)")),
        ("b", b),
        ("c", lambda m: m.sql("CREATE TABLE c_tbl (id INTEGER PRIMARY KEY)")),
    ]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    err = caught.value
    assert err.category == "transaction_control" and err.migration == "b", str(err)
    assert shown in str(err) and "atomic=False" in str(err) and err.statement and shown in err.statement
    assert not {"a_tbl", "b_tbl", "c_tbl"} & tables(db), "something was committed early"
    assert {n: r.status for n, r in history(db).items()} == {"b": "failed"}
    assert "transaction_control" in history(db)["b"].error_message
    # The guard is gone afterwards: the database commits as usual.
    assert migrate_db(db, [migrations[0]]).applied == ["a"]


@pytest.mark.engines("postgres", "sqlite")
def test_non_atomic_migration_may_manage_its_own_transactions(db: Any, engine: Engine) -> None:
    def own(m: Any) -> None:
        with m.db.atomic():
            m.sql("INSERT INTO item (id) VALUES (1)")
        if engine.family == "postgres":  # SQLite: the lock's BEGIN IMMEDIATE is still open
            m.sql("BEGIN")
            m.sql("INSERT INTO item (id) VALUES (2)")
            m.sql("COMMIT")

    migrations = [
        ("create_item", lambda m: m.sql("CREATE TABLE item (id INTEGER PRIMARY KEY)")),
        Migration("own", own, atomic=False),
    ]
    assert migrate_db(db, migrations).applied == ["create_item", "own"]
    assert len(rows(db, "SELECT id FROM item")) == (2 if engine.family == "postgres" else 1)


# -- lost connections -------------------------------------------------------------------------


def _wait_gone(engine: Engine, url: str, session: int) -> None:
    sql = (
        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s"
        if engine.family == "postgres"
        else "SELECT count(*) FROM information_schema.PROCESSLIST WHERE ID = %s"
    )
    deadline = time.monotonic() + 10
    with admin_cursor(engine, url) as cur:
        while time.monotonic() < deadline:
            cur.execute(sql, (session,))
            if not cur.fetchone()[0]:
                return
            time.sleep(0.05)
    raise AssertionError(f"session {session} still there")


def _kill_own_session(m: Any, engine: Engine, url: str) -> None:
    """From another connection, end the session this migration runs on (pg_terminate_backend, KILL)."""
    if engine.family == "postgres":
        session = m.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        kill = "SELECT pg_terminate_backend(%s)"
    else:
        session = m.db.execute_sql("SELECT CONNECTION_ID()").fetchone()[0]
        kill = "KILL %s"
    with admin_cursor(engine, url) as cur:
        cur.execute(kill, (session,))
    _wait_gone(engine, url, session)


def _assert_connection_lost(err: MigrationError, name: str) -> None:
    assert err.category == "connection_lost" and err.migration == name, str(err)
    assert f"migration {name!r}" in str(err) and "the next migrate_db() takes over" in str(err)
    assert err.__cause__ is not None and not isinstance(err.__cause__, peewee.InterfaceError)
    assert isinstance(err.orig, peewee.OperationalError), repr(err.orig)


@pytest.mark.engines("postgres")
def test_terminated_backend_mid_migration_is_connection_lost(db: Any, db_url: str, engine: Engine) -> None:
    """The raw InterfaceError of the rollback ("connection already closed") hid the migration, the cause."""
    killed: list[bool] = []

    def b(m: Any) -> None:
        m.sql("CREATE TABLE b_tbl (id INTEGER PRIMARY KEY)")
        if not killed:
            killed.append(True)
            _kill_own_session(m, engine, db_url)
        m.sql("INSERT INTO b_tbl (id) VALUES (1)")

    migrations = [CREATE_DOC, ("b", b)]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    _assert_connection_lost(caught.value, "b")
    assert history(db) == {} and not {"doc", "b_tbl"} & tables(db)  # rolled back, nothing written
    assert migrate_db(db, migrations).applied == ["create_doc", "b"]
    assert rows(db, "SELECT id FROM b_tbl") == [(1,)]


@pytest.mark.engines("postgres")
def test_idle_in_transaction_timeout_is_connection_lost(db: Any) -> None:
    slept: list[bool] = []

    def slow(m: Any) -> None:
        m.sql("CREATE TABLE slow_tbl (id INTEGER PRIMARY KEY)")
        if not slept:
            slept.append(True)
            m.sql("SET idle_in_transaction_session_timeout = 200")
            time.sleep(1.0)
        m.sql("INSERT INTO slow_tbl (id) VALUES (1)")

    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [("slow", slow)])
    _assert_connection_lost(caught.value, "slow")
    assert history(db) == {} and "slow_tbl" not in tables(db)
    assert migrate_db(db, [("slow", slow)]).applied == ["slow"]


@pytest.mark.engines("mysql", "postgres")
def test_killed_session_mid_migration_leaves_history_to_the_next_booter(
    db: Any, db_url: str, engine: Engine
) -> None:
    """MariaDB after KILL: the failed row was written on a new connection, without the lock.

    PostgreSQL: the same with an atomic=False migration (outside a transaction, resumable).
    """
    killed: list[bool] = []

    def widen(m: Any) -> None:
        m.add_column("doc", "x", IntegerField(null=True))
        if not killed:
            killed.append(True)
            _kill_own_session(m, engine, db_url)
        m.add_column("doc", "y", IntegerField(null=True))

    migrations = [CREATE_DOC, Migration("widen", widen, atomic=False)]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    _assert_connection_lost(caught.value, "widen")
    row = history(db)["widen"]
    assert row.status == "running" and row.completed_operations == 1  # no failed row without the lock
    with statements(db) as seen:
        assert migrate_db(db, migrations).applied == ["widen"]
    replayed = [s for s in seen if re.search(r"ADD COLUMN [`\"]x[`\"]", s)]
    assert not replayed, "the completed operation was replayed"
    with db.connection_context():
        assert {"x", "y"} <= {c.name for c in db.get_columns("doc")}
    assert history(db)["widen"].status == "success"


# -- read-only targets ---------------------------------------------------------------------------


@pytest.mark.engines("postgres")
def test_read_only_postgres_database_is_named_before_locking(db: Any, db_url: str, engine: Engine) -> None:
    migrate_db(db, [CREATE_DOC])
    name = db_url.rsplit("/", 1)[1]
    with admin_cursor(engine) as cur:
        cur.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    db.close_all()  # the setting applies to new sessions
    try:
        assert migrate_db(db, [CREATE_DOC]).fast_path  # the no-op boot still answers
        with statements(db) as seen, pytest.raises(ReadOnlyDatabase) as caught:
            migrate_db(db, [CREATE_DOC, NEW])
        text = str(caught.value)
        assert "default_transaction_read_only" in text and "target_session_attrs=read-write" in text
        assert caught.value.reason == "default_transaction_read_only is on"
        assert len(seen) == 2 and not [s for s in seen if "advisory" in s or "CREATE" in s.upper()]
    finally:
        with admin_cursor(engine) as cur:
            cur.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        db.close_all()
    assert migrate_db(db, [CREATE_DOC, NEW]).applied == ["add_n"]


@pytest.mark.engines("mysql")
def test_read_only_mysql_session_is_named_before_locking(db: Any) -> None:
    """read_only is server-wide (not set on a shared server): the same check on the session's
    transaction_read_only (tx_read_only on MariaDB before 11.1), set by SET SESSION TRANSACTION READ ONLY."""
    migrate_db(db, [CREATE_DOC])
    db.connect()
    try:
        db.execute_sql("SET SESSION TRANSACTION READ ONLY")
        assert migrate_db(db, [CREATE_DOC]).fast_path
        with pytest.raises(ReadOnlyDatabase) as caught:
            migrate_db(db, [CREATE_DOC, NEW])
        assert caught.value.reason in ("transaction_read_only is ON", "tx_read_only is ON",
                                       "transaction_read_only and tx_read_only are ON")  # fmt: skip
        assert caught.value.reason in str(caught.value) and "primary" in str(caught.value)
        db.execute_sql("SET SESSION TRANSACTION READ WRITE")
    finally:
        db.close()
    assert migrate_db(db, [CREATE_DOC, NEW]).applied == ["add_n"]


@pytest.mark.engines("sqlite")
def test_read_only_sqlite_is_named_before_locking(db: Any, db_url: str) -> None:
    """As root a chmod 0444 file is still writable: PRAGMA query_only and a mode=ro URI stand in for it."""
    migrate_db(db, [CREATE_DOC])
    db.connect()
    try:
        db.execute_sql("PRAGMA query_only = ON")
        assert migrate_db(db, [CREATE_DOC]).fast_path
        with pytest.raises(ReadOnlyDatabase, match="query_only"):
            migrate_db(db, [CREATE_DOC, NEW])
        db.execute_sql("PRAGMA query_only = OFF")
    finally:
        db.close()
    path = db_url[len("sqlite:///"):]
    ro = peewee.SqliteDatabase(f"file:{path}?mode=ro", uri=True)
    try:
        assert migrate_db(ro, [CREATE_DOC]).fast_path
        with pytest.raises(ReadOnlyDatabase, match="mode=ro") as caught:
            migrate_db(ro, [CREATE_DOC, NEW])
        assert "no mode=ro" in str(caught.value)
    finally:
        ro.close()
    assert migrate_db(db, [CREATE_DOC, NEW]).applied == ["add_n"]


# -- the lock handle the runner takes ----------------------------------------------------------


class _LeaseLike:
    """A lock handle that stays ours whatever happens to the migration's connection (as a lease does)."""

    strategy = "lease"
    owner = "token-under-test"
    reason = "requested"

    def __init__(self, fence: Any = None) -> None:
        self.fence = fence
        self.checks = 0

    def check(self) -> None:
        self.checks += 1

    def fenced(self) -> Any:
        return contextlib.nullcontext()


@pytest.mark.engines("postgres")
def test_history_is_written_on_a_fresh_connection_while_the_lock_is_still_ours(
    db: Any, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import api.db.migrate.runner as runner

    handle = _LeaseLike()
    real_lock = runner.migration_lock

    @contextlib.contextmanager
    def lease_lock(database: Any, *, timeout: float, **settings: Any) -> Iterator[_LeaseLike]:
        with real_lock(database, timeout=timeout, **settings):
            yield handle

    monkeypatch.setattr(runner, "migration_lock", lease_lock)

    def b(m: Any) -> None:
        m.sql("CREATE TABLE b_tbl (id INTEGER PRIMARY KEY)")
        _kill_own_session(m, engine, db_url)
        m.sql("INSERT INTO b_tbl (id) VALUES (1)")

    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [CREATE_DOC, ("b", b)])
    assert caught.value.category == "connection_lost" and caught.value.migration == "b"
    assert "no history was written" not in str(caught.value)
    row = history(db)["b"]
    assert row.status == "failed" and row.owner == "token-under-test"
    assert "connection_lost" in row.error_message
    assert handle.checks >= 3  # before each migration, and before the failed row


@pytest.mark.engines("sqlite", "postgres", "mysql")
def test_fenced_history_writes_happen_only_while_the_fence_holds(db: Any) -> None:
    from api.db.exceptions import MigrationLockLost

    holds, lost = peewee.Value(1) == 1, peewee.Value(1) == 2
    with db.connection_context():
        tracker = MigrationTracker(db)
        tracker.init_tracking_table()
        tracker.record_migration("a", "running", completed=0, owner="t1", fence=holds)  # INSERT ... SELECT
        tracker.update_progress("a", 2, fence=holds)
        with pytest.raises(MigrationLockLost):
            tracker.record_migration("b", "running", owner="t1", fence=lost)
        with pytest.raises(MigrationLockLost):
            tracker.update_progress("a", 3, fence=lost)
        with pytest.raises(MigrationLockLost):
            tracker.record_migration("a", "success", completed=3, owner="t1", fence=lost)
        tracker.record_migration("a", "failed", "boom", 1.5, completed=2, owner="t1", fence=holds)
    row = history(db)["a"]
    assert (row.status, row.completed_operations) == ("failed", 2)
    assert (row.owner, row.error_message) == ("t1", "boom")
    assert "b" not in history(db)
