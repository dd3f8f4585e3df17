"""Lock-safe DDL on the live engines: native add_column, bounded lock waits, concurrent indexes."""

from __future__ import annotations

import contextlib
import datetime
import decimal
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import peewee
import pytest
from playhouse.migrate import SchemaMigrator

from api.db import DatabaseCompat, DDLLockTimeout, UnsupportedCapability, connect
from api.db.engines import db_type
from api.db.error_handler import ErrorCategory, StandardErrorHandler
from api.db.exceptions import ConcurrentIndexInTransaction
from api.db.schema.ddl import safe_schema_migrator

from engines import Engine, admin_cursor

ROWS = 200


def _make_items(db: peewee.Database, rows: int = ROWS, table: str = "items") -> None:
    db.execute_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER)")
    values = ", ".join(f"({i}, {i % 7})" for i in range(1, rows + 1))
    db.execute_sql(f"INSERT INTO {table} (id, v) VALUES {values}")


def _close(database: peewee.Database) -> None:
    close_all = getattr(database, "close_all", None)
    close_all() if close_all else database.close()


def _ddl_statements(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split(": ", 1)[1] for r in caplog.records
            if r.name == "api.db.schema.ddl" and r.getMessage().startswith("DDL (lock wait")]


# --- a blocker: another session with an open transaction that wrote to the table -------------


@contextlib.contextmanager
def open_writer_transaction(
    engine: Engine, db_url: str, table: str = "items"
) -> Iterator[tuple[int, Callable[[], None]]]:
    """A session that updated ``table`` in a still-open transaction; yields (session id, end it)."""
    statement = f"UPDATE {table} SET v = v WHERE id = 1"
    if engine.family == "sqlite":
        path = urlsplit(db_url).path[1:]
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(statement)
        try:
            yield 0, lambda: conn.execute("ROLLBACK") if conn.in_transaction else None
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
        return
    with admin_cursor(engine, db_url) as cur:
        cur.execute("SELECT pg_backend_pid()" if engine.family == "postgres" else "SELECT CONNECTION_ID()")
        session_id = int(cur.fetchone()[0])
        cur.execute("BEGIN")
        cur.execute(statement)
        ended = threading.Event()

        def end() -> None:
            if not ended.is_set():
                cur.execute("ROLLBACK")
                ended.set()

        try:
            yield session_id, end
        finally:
            end()


class Readers:
    """A thread reading the table in a loop on its own connection, recording each read's latency."""

    def __init__(self, db_url: str, table: str = "items") -> None:
        self.database = connect(db_url)
        self.table = table
        self.latencies: list[float] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="apidb-test-readers", daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 30
        while not self.stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                self.database.execute_sql(f"SELECT count(*) FROM {self.table}").fetchone()
            except peewee.DatabaseError as exc:
                self.errors.append(exc)
            self.latencies.append(time.monotonic() - started)
            time.sleep(0.02)
        self.database.close()

    def __enter__(self) -> Readers:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(10)
        _close(self.database)


def _in_thread(function: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            outcome["result"] = function()
        except BaseException as exc:  # handed to the test thread, which asserts on it
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, name="apidb-test-migration", daemon=True)
    thread.start()
    return thread, outcome


# --- add_column ----------------------------------------------------------------------------------


def _defaults() -> list[tuple[str, peewee.Field]]:
    return [
        ("label", peewee.CharField(max_length=64, default="it's 50% \\ o'clock")),
        ("flag", peewee.BooleanField(default=True)),
        ("day", peewee.DateField(default=datetime.date(2024, 2, 29))),
        ("stamp", peewee.DateTimeField(default=datetime.datetime(2024, 1, 2, 3, 4, 5))),
        ("price", peewee.DecimalField(max_digits=10, decimal_places=2, default=decimal.Decimal("12.50"))),
        ("count", peewee.IntegerField(default=-7)),
        ("ratio", peewee.FloatField(default=1.5)),
        ("note", peewee.TextField(default="two\nlines")),
        ("token", peewee.UUIDField(default=uuid.UUID("12345678-1234-5678-1234-567812345678"))),
    ]


def _columns(db: peewee.Database, table: str) -> list[tuple[Any, ...]]:
    return [(c.name, c.data_type, c.null, c.full_type) for c in db.get_columns(table)]


def test_add_column_not_null_default_matches_playhouse(
    db: peewee.Database, caplog: pytest.LogCaptureFixture
) -> None:
    _make_items(db, table="theirs")
    _make_items(db, table="ours")
    theirs = SchemaMigrator.from_database(db)
    ours = safe_schema_migrator(db)
    caplog.set_level(logging.INFO, logger="api.db.schema.ddl")
    for name, fld in _defaults():
        theirs.migrate(theirs.add_column("theirs", name, fld))
        ours.migrate(ours.add_column("ours", name, fld))
    assert _columns(db, "ours") == _columns(db, "theirs")
    rows_theirs = db.execute_sql("SELECT * FROM theirs ORDER BY id").fetchall()
    rows_ours = db.execute_sql("SELECT * FROM ours ORDER BY id").fetchall()
    assert len(rows_ours) == ROWS and list(rows_ours) == list(rows_theirs)
    assert rows_ours[0][2] == "it's 50% \\ o'clock"
    defaults = {c.name: c.default for c in db.get_columns("ours")}
    if db_type(db) == "sqlite":
        assert defaults["count"] == "-7"  # kept: dropping it would rebuild the table
    else:
        assert all(defaults[name] is None for name, _ in _defaults())  # as playhouse leaves it
    statements = _ddl_statements(caplog)
    assert not [s for s in statements if s.upper().startswith("UPDATE")], "no row was rewritten"
    assert len([s for s in statements if "ADD COLUMN" in s]) == len(_defaults())


def test_nullable_column_with_default_fills_existing_rows(db: peewee.Database) -> None:
    _make_items(db)
    migrator = safe_schema_migrator(db)
    migrator.migrate(migrator.add_column("items", "tag", peewee.CharField(null=True, default="none")))
    assert db.execute_sql("SELECT count(*) FROM items WHERE tag = 'none'").fetchone()[0] == ROWS
    db.execute_sql("INSERT INTO items (id, v) VALUES (100000, 1)")
    # The schema default is dropped afterwards (kept on SQLite): new rows get the Python-side default.
    expected = "none" if db_type(db) == "sqlite" else None
    assert db.execute_sql("SELECT tag FROM items WHERE id = 100000").fetchone()[0] == expected


@pytest.mark.engines("postgres")
def test_add_column_with_default_is_metadata_only_on_postgres(db: peewee.Database) -> None:
    _make_items(db, rows=5000)
    before = db.execute_sql("SELECT pg_relation_filenode('items')").fetchone()[0]
    migrator = safe_schema_migrator(db)
    migrator.migrate(migrator.add_column("items", "flag", peewee.BooleanField(default=False)))
    assert db.execute_sql("SELECT pg_relation_filenode('items')").fetchone()[0] == before, "table rewritten"
    missing = db.execute_sql("SELECT atthasmissing FROM pg_attribute WHERE attrelid = 'items'::regclass "
                             "AND attname = 'flag'").fetchone()[0]
    assert missing is True


def test_not_null_without_default_is_refused(db: peewee.Database) -> None:
    from api.db import ConfigurationError

    _make_items(db)
    migrator = safe_schema_migrator(db)
    with pytest.raises(ConfigurationError, match="NOT NULL without a default"):
        migrator.migrate(migrator.add_column("items", "bad", peewee.IntegerField()))


# --- bounded lock waits ----------------------------------------------------------------------------


def test_blocked_ddl_keeps_readers_moving_and_succeeds_after_the_blocker(
    engine: Engine, db_url: str, db: peewee.Database, caplog: pytest.LogCaptureFixture
) -> None:
    _make_items(db)
    db.close()
    lock_timeout, held_for = 1.0, 4.0
    migrator = safe_schema_migrator(db, lock_timeout=lock_timeout, retries=8, backoff=0.2, max_backoff=0.4)
    caplog.set_level(logging.INFO, logger="api.db.schema.ddl")
    with open_writer_transaction(engine, db_url) as (_, end_blocker), Readers(db_url) as readers:
        thread, outcome = _in_thread(
            lambda: migrator.migrate(migrator.add_column("items", "flag", peewee.BooleanField(default=False)))
        )
        time.sleep(held_for)
        end_blocker()
        thread.join(20)
    db.close()
    assert "error" not in outcome, outcome.get("error")
    assert outcome["elapsed"] >= held_for - 0.5, "the migration must have waited for the blocker"
    assert any("retrying" in r.getMessage() for r in caplog.records), "it gave way and retried"
    assert "flag" in [c.name for c in db.get_columns("items")]
    assert not readers.errors
    # Without a bound, readers would queue behind the waiting ALTER for the whole 4 s.
    assert max(readers.latencies) < lock_timeout + 1.5, max(readers.latencies)


def test_ddl_gives_up_naming_the_blocker(engine: Engine, db_url: str, db: peewee.Database) -> None:
    _make_items(db)
    db.close()
    migrator = safe_schema_migrator(db, lock_timeout=1.0, retries=1, backoff=0.1)
    with open_writer_transaction(engine, db_url) as (session_id, _), Readers(db_url) as readers:
        started = time.monotonic()
        with pytest.raises(DDLLockTimeout) as caught:
            migrator.migrate(migrator.add_column("items", "flag", peewee.BooleanField(default=False)))
        elapsed = time.monotonic() - started
        db.close()
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.attempts == 2 and error.table == "items"
    assert elapsed < 8, elapsed
    assert max(readers.latencies) < 2.5
    if engine.family == "sqlite":
        assert error.blockers == [] and "SQLite does not report" in str(error)
        return
    assert session_id in [b.session_id for b in error.blockers], error.blockers
    blocker = next(b for b in error.blockers if b.session_id == session_id)
    assert f"session {session_id}" in str(error)
    assert blocker.running_for is not None and blocker.running_for > 1.0
    if engine.family == "postgres":
        assert "UPDATE items SET v = v WHERE id = 1" in str(error)
        assert blocker.state == "idle in transaction"
    assert StandardErrorHandler.classify(error.orig, engine.family).category is ErrorCategory.LOCK_TIMEOUT


@pytest.mark.engines("postgres", "mysql")
def test_lock_settings_never_leak_to_the_next_borrower(
    engine: Engine, db_url: str, db: peewee.Database
) -> None:
    _make_items(db)
    read = "SHOW lock_timeout" if engine.family == "postgres" else "SELECT @@SESSION.lock_wait_timeout"
    db.connect(reuse_if_open=True)
    connection = db.connection()
    original = db.execute_sql(read).fetchone()[0]
    migrator = safe_schema_migrator(db, lock_timeout=1.0, retries=0)
    migrator.migrate(migrator.add_column("items", "a", peewee.IntegerField(default=1)),
                     migrator.add_index("items", ("v",), concurrently=True))
    assert db.execute_sql(read).fetchone()[0] == original
    with open_writer_transaction(engine, db_url), pytest.raises(DDLLockTimeout):
        migrator.migrate(migrator.add_column("items", "b", peewee.IntegerField(default=1)))
    assert db.connection() is connection, "the same pooled connection, now back at its own setting"
    assert db.execute_sql(read).fetchone()[0] == original
    if engine.family == "postgres":
        with db.atomic():
            migrator.migrate(migrator.add_column("items", "c", peewee.IntegerField(default=1)))
            assert db.execute_sql(read).fetchone()[0] == original, (
                "SET LOCAL undone inside the caller's transaction"
            )


@pytest.mark.engines("mysql")
def test_mysql_code_path_on_this_server(engine: Engine, db_url: str, db: peewee.Database,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """MySQL's own branch (SET SESSION + restore, expression defaults for TEXT), run against this server.

    Only the migrator's idea of the flavour is replaced: MariaDB accepts both forms, so the
    statements MySQL 8 would receive really run here.
    """
    _make_items(db)
    migrator = safe_schema_migrator(db, lock_timeout=1.0, retries=0)
    migrator._compat = DatabaseCompat("mysql", (8, 0, 36))
    caplog.set_level(logging.INFO, logger="api.db.schema.ddl")
    read = "SELECT @@SESSION.lock_wait_timeout, @@SESSION.innodb_lock_wait_timeout"
    db.connect(reuse_if_open=True)
    original = db.execute_sql(read).fetchone()
    migrator.migrate(migrator.add_column("items", "note", peewee.TextField(default="it's")))
    assert db.execute_sql("SELECT count(*) FROM items WHERE note = 'it''s'").fetchone()[0] == ROWS
    assert any("DEFAULT ('it''s')" in s for s in _ddl_statements(caplog))
    assert db.execute_sql(read).fetchone() == original
    with open_writer_transaction(engine, db_url), pytest.raises(DDLLockTimeout):
        migrator.migrate(migrator.add_column("items", "other", peewee.IntegerField(default=0)))
    assert db.execute_sql(read).fetchone() == original


# --- indexes, types, foreign keys -----------------------------------------------------------------


@pytest.mark.engines("postgres")
def test_concurrent_index_build_does_not_block_writers(
    engine: Engine, db_url: str, db: peewee.Database
) -> None:
    _make_items(db, rows=20000)
    db.close()
    migrator = safe_schema_migrator(db, lock_timeout=15.0, retries=0)
    writer = connect(db_url)
    try:
        with open_writer_transaction(engine, db_url) as (_, end_blocker):
            thread, outcome = _in_thread(
                lambda: migrator.migrate(migrator.add_index("items", ("v",), concurrently=True))
            )
            deadline = time.monotonic() + 10
            waiting = False
            while time.monotonic() < deadline and not waiting:
                waiting = bool(writer.execute_sql(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND query LIKE 'CREATE INDEX CONCURRENTLY%%' AND wait_event_type = 'Lock'"
                ).fetchone()[0])
                time.sleep(0.05)
            assert waiting, "the index build should be waiting for the open transaction"
            started = time.monotonic()
            writer.execute_sql("INSERT INTO items (id, v) VALUES (999999, 3)")
            writer.execute_sql("UPDATE items SET v = 4 WHERE id = 2")
            write_latency = time.monotonic() - started
            assert thread.is_alive(), "the build is still in progress while the writes went through"
            end_blocker()
            thread.join(20)
    finally:
        _close(writer)
    assert "error" not in outcome, outcome.get("error")
    assert write_latency < 1.0, write_latency
    valid = db.execute_sql(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_v'::regclass"
    ).fetchone()[0]
    assert valid is True


@pytest.mark.engines("postgres")
def test_concurrent_index_inside_a_transaction_is_refused(db: peewee.Database) -> None:
    _make_items(db)
    migrator = safe_schema_migrator(db)
    with pytest.raises(ConcurrentIndexInTransaction, match="cannot run inside a transaction"), db.atomic():
        migrator.migrate(migrator.add_index("items", ("v",), concurrently=True))


@pytest.mark.engines("postgres")
def test_invalid_index_from_a_failed_build_is_dropped_before_retrying(db: peewee.Database) -> None:
    _make_items(db)  # v repeats: a unique build fails and leaves an INVALID index behind
    migrator = safe_schema_migrator(db)
    with pytest.raises(peewee.IntegrityError):
        migrator.migrate(migrator.add_index("items", ("v",), unique=True, concurrently=True))
    invalid = "SELECT count(*) FROM pg_index WHERE indexrelid = to_regclass('items_v') AND NOT indisvalid"
    assert db.execute_sql(invalid).fetchone()[0] == 1
    db.execute_sql("DELETE FROM items WHERE id > 7")
    migrator.migrate(migrator.add_index("items", ("v",), unique=True, concurrently=True))
    assert db.execute_sql(invalid).fetchone()[0] == 0
    assert db.execute_sql(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'items_v'::regclass"
    ).fetchone()[0]


@pytest.mark.engines("mysql")
def test_online_index_on_mysql(db: peewee.Database, caplog: pytest.LogCaptureFixture) -> None:
    _make_items(db)
    caplog.set_level(logging.INFO, logger="api.db.schema.ddl")
    migrator = safe_schema_migrator(db)
    migrator.migrate(migrator.add_index("items", ("v",), concurrently=True))
    assert any(s.endswith("ALGORITHM=INPLACE LOCK=NONE") for s in _ddl_statements(caplog))
    assert "items_v" in [i.name for i in db.get_indexes("items")]


@pytest.mark.engines("postgres")
def test_alter_column_type_using_on_postgres(db: peewee.Database) -> None:
    db.execute_sql("CREATE TABLE codes (id INTEGER PRIMARY KEY, code VARCHAR(10))")
    db.execute_sql("INSERT INTO codes VALUES (1, '42'), (2, '7')")
    migrator = safe_schema_migrator(db)
    with pytest.raises(peewee.DatabaseError) as refused:
        migrator.migrate(migrator.alter_column_type("codes", "code", peewee.IntegerField()))
    assert (
        StandardErrorHandler.classify(refused.value, "postgres").category is ErrorCategory.INCOMPATIBLE_TYPE
    )
    migrator.migrate(migrator.alter_column_type("codes", "code", peewee.IntegerField(), using=True))
    assert db.execute_sql("SELECT sum(code) FROM codes").fetchone()[0] == 49


@pytest.mark.engines("postgres")
def test_foreign_key_added_not_valid_then_validated(
    db: peewee.Database, caplog: pytest.LogCaptureFixture
) -> None:
    class Parent(peewee.Model):
        class Meta:
            database = db
            table_name = "parent"

    db.create_tables([Parent])
    db.execute_sql("INSERT INTO parent (id) VALUES (1)")
    _make_items(db)
    caplog.set_level(logging.INFO, logger="api.db.schema.ddl")
    migrator = safe_schema_migrator(db)
    migrator.migrate(migrator.add_column("items", "parent_id",
                                         peewee.ForeignKeyField(Parent, null=True, field=Parent.id)))
    statements = _ddl_statements(caplog)
    assert any(s.endswith("NOT VALID") for s in statements)
    assert any("VALIDATE CONSTRAINT" in s for s in statements)
    assert db.execute_sql("SELECT bool_and(convalidated) FROM pg_constraint WHERE conrelid = "
                          "'items'::regclass AND contype = 'f'").fetchone()[0] is True
    with pytest.raises(peewee.IntegrityError):
        db.execute_sql("UPDATE items SET parent_id = 99 WHERE id = 1")


# --- capability-gated migrations -------------------------------------------------------------------


def test_requires_runs_only_where_the_capability_exists(db: peewee.Database) -> None:
    ran: list[str] = []

    @DatabaseCompat.requires("postgres", "concurrent_index")
    def build_index_concurrently(migrator: Any) -> None:
        ran.append("yes")

    migrator = safe_schema_migrator(db)
    if db_type(db) == "postgres":
        build_index_concurrently(migrator)
        assert ran == ["yes"]
    else:
        with pytest.raises(UnsupportedCapability, match="written for PostgreSQL"):
            build_index_concurrently(migrator)
        assert ran == []

    @DatabaseCompat.requires(None, "partial_indexes")
    def partial(database: peewee.Database) -> str:
        return "ran"

    if DatabaseCompat.for_database(db).has("partial_indexes"):
        assert partial(db) == "ran"
    else:
        with pytest.raises(UnsupportedCapability) as caught:
            partial(db)
        assert caught.value.capability == "partial_indexes"
        assert "not available on" in str(caught.value)
