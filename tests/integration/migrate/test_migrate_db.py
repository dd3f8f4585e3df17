"""migrate_db on every engine: apply, re-apply, adopt, fail, resume, lock, declarations, secrets."""

from __future__ import annotations

import contextlib
import logging
import re
import sqlite3
import uuid
from typing import Any

import pytest
from peewee import CharField, IntegerField, Model, TextField

from api.db import (
    Migration,
    MigrationError,
    MigrationLockTimeout,
    UnsupportedCapability,
    connect,
    migrate_db,
    migration_status,
)
from api.db.exceptions import MigrationDeclarationError
from api.db.migrate.alter import alter_db_add_column, alter_db_column_type, alter_db_rename_column
from api.db.migrate.lock import PG_LOCK_KEY, mysql_lock_name
from api.db.migrate.runner import make_schema_migrator
from api.db.migrate.status import pending_migrations, repair_migration, validate_migrations
from api.db.migrate.tracker import MigrationTracker

from engines import Engine, admin_cursor, history, statements

DDL = re.compile(r"^\s*(CREATE|ALTER|DROP)\b", re.IGNORECASE)


def columns(db: Any, table: str) -> set[str]:
    with db.connection_context():
        return {c.name for c in db.get_columns(table)}


def tables(db: Any) -> set[str]:
    with db.connection_context():
        return set(db.get_tables())


BASIC = [
    ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")),
    Migration(
        "add_doc_source_type",
        lambda m: m.add_column(
            "doc", "source_type", CharField(max_length=64, null=False, default="", index=True)
        ),
    ),
    ("add_doc_pages", lambda m: m.add_column("doc", "pages", IntegerField(null=True))),
    ("rename_doc_pages", lambda m: m.rename_column("doc", "pages", "page_count")),
]


def test_apply_then_reapply_runs_no_ddl(db: Any) -> None:
    report = migrate_db(db, BASIC)
    assert report.applied == [
        name for name, *_ in [(m[0],) if isinstance(m, tuple) else (m.name,) for m in BASIC]
    ]
    assert {"source_type", "page_count"} <= columns(db, "doc") and "pages" not in columns(db, "doc")
    assert all(row.status == "success" and row.checksum for row in history(db).values())
    with statements(db) as seen:
        again = migrate_db(db, BASIC)
    assert again.fast_path and again.pending_before == [] and again.outcomes == []
    assert not [s for s in seen if DDL.match(s)]
    assert len(seen) <= 2, seen  # the no-op boot: at most two round trips, no lock


def test_adopts_a_database_that_already_has_the_changes(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50), "
                   "source_type VARCHAR(64), page_count INTEGER)")
    report = migrate_db(
        db,
        [
            ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")),
            ("add_doc_source_type",
             lambda m: m.add_column("doc", "source_type", CharField(max_length=64, null=True))),
            ("rename_doc_pages", lambda m: m.rename_column("doc", "pages", "page_count")),
            ("drop_doc_legacy", lambda m: m.drop_column("doc", "legacy")),
            ("add_doc_lang", lambda m: m.add_column("doc", "lang", CharField(max_length=8, null=True))),
        ],
    )
    assert report.skipped == ["create_doc", "add_doc_source_type", "rename_doc_pages", "drop_doc_legacy"]
    assert report.applied == ["add_doc_lang"]
    rows = history(db)
    assert (
        rows["rename_doc_pages"].status == "skipped" and "adopted" in rows["rename_doc_pages"].error_message
    )
    assert rows["add_doc_lang"].status == "success"
    assert "lang" in columns(db, "doc")


@pytest.mark.engines("postgres", "sqlite")
def test_failure_rolls_everything_back_and_records_failed(db: Any) -> None:
    migrations = [
        ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")),
        ("add_doc_title", lambda m: m.add_column("doc", "title", CharField(max_length=10, null=True))),
        ("broken", lambda m: m.sql("ALTER TABLE nope ADD COLUMN x INTEGER")),
    ]
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    err = caught.value
    assert err.migration == "broken" and err.category == "missing_table"
    assert err.statement is not None and "nope" in err.statement
    assert "broken" in str(err) and "missing_table" in str(err) and "rolled back" in str(err)
    assert "doc" not in tables(db)
    rows = history(db)
    assert list(rows) == ["broken"] and rows["broken"].status == "failed"
    assert "missing_table" in rows["broken"].error_message and rows["broken"].duration_ms is not None
    # atomic="each": what came before the failure stays applied.
    with pytest.raises(MigrationError):
        migrate_db(db, migrations, atomic="each")
    assert {n: r.status for n, r in history(db).items()} == {
        "broken": "failed",
        "create_doc": "success",
        "add_doc_title": "success",
    }
    assert "title" in columns(db, "doc")


@pytest.mark.engines("postgres")
def test_expected_failure_does_not_poison_the_postgres_transaction(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(10))")
    report = migrate_db(
        db,
        [
            ("add_title_again", lambda m: m.add_column("doc", "title", CharField(max_length=10, null=True))),
            ("add_body", lambda m: m.add_column("doc", "body", TextField(null=True))),
        ],
    )
    assert report.skipped == ["add_title_again"] and report.applied == ["add_body"]


@pytest.mark.engines("mysql")
def test_mysql_failure_reports_partial_state_and_next_run_completes(
    db: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def widen(m: Any) -> None:
        m.add_column("doc", "x", IntegerField(null=True))
        m.add_column("doc", "y", IntegerField(null=True))
        m.sql("ALTER TABLE later ADD COLUMN z INTEGER")

    migrations = [
        ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")),
        ("widen", widen),
    ]
    caplog.set_level(logging.INFO, logger="api.db")
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, migrations)
    err = caught.value
    assert err.migration == "widen" and len(err.completed) == 2
    assert "cannot roll back DDL" in str(err)
    assert any(r.levelname == "WARNING" and "cannot roll back DDL" in r.getMessage() for r in caplog.records)
    rows = history(db)
    assert rows["create_doc"].status == "success" and rows["widen"].status == "failed"
    assert rows["widen"].completed_operations == 2 and rows["widen"].owner
    assert {"x", "y"} <= columns(db, "doc")  # honestly left applied

    db.execute_sql("CREATE TABLE later (id INTEGER PRIMARY KEY)")
    with statements(db) as seen:
        report = migrate_db(db, migrations)
    assert report.applied == ["widen"]
    assert not [s for s in seen if "ADD COLUMN `x`" in s or "ADD COLUMN `y`" in s], (
        "completed operations replayed"
    )
    assert history(db)["widen"].status == "success" and "z" in columns(db, "later")


def test_invalid_declarations_fail_before_any_statement(db: Any) -> None:
    bad_lists: list[Any] = [
        [("dup", lambda m: None), ("dup", lambda m: None)],
        [("", lambda m: None)],
        [("not_callable", "ALTER TABLE x")],
        [("x" * 256, lambda m: None)],
        [("two_args", lambda m, n: None)],
        ["just a string"],
        "not a list",
    ]
    with statements(db) as seen:
        for bad in bad_lists:
            with pytest.raises(MigrationDeclarationError):
                migrate_db(db, bad)
    assert seen == [] and tables(db) == set()
    with pytest.raises(MigrationDeclarationError) as caught:
        migrate_db(db, [("a", lambda m: None), ("a", 3), (" b", lambda m: None)])
    assert "3 invalid" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_bad_settings_are_rejected(db: Any) -> None:
    for kwargs in ({"lock_timeout": 0}, {"atomic": "some"}, {"on_unknown": "ignore"}):
        with pytest.raises(ValueError):
            migrate_db(db, BASIC, **kwargs)
    assert tables(db) == set()


def test_unsupported_capability_is_recorded_skipped(db: Any) -> None:
    def needs_vectors(m: Any) -> None:
        raise UnsupportedCapability("vector_type needs pgvector 0.5.0 or newer", capability="vector_type")

    report = migrate_db(db, [("create_doc", BASIC[0][1]), ("add_embedding", needs_vectors)])  # type: ignore[index]
    assert report.skipped == ["add_embedding"] and report.applied == ["create_doc"]
    row = history(db)["add_embedding"]
    assert row.status == "skipped" and "pgvector 0.5.0" in row.error_message
    assert migrate_db(db, [("create_doc", BASIC[0][1]), ("add_embedding", needs_vectors)]).fast_path  # type: ignore[index]


def test_unknown_history_rows_warn_or_refuse(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    migrate_db(db, BASIC)
    older = BASIC[:2]
    caplog.set_level(logging.WARNING, logger="api.db")
    report = migrate_db(db, older)
    assert not report.fast_path and report.unknown == ["add_doc_pages", "rename_doc_pages"]
    assert any("does not declare" in r.getMessage() for r in caplog.records)
    statuses = {s.name: (s.status, s.declared) for s in migration_status(db, older)}
    assert statuses["rename_doc_pages"] == ("success", False)
    with pytest.raises(MigrationError, match="refusing to start"):
        migrate_db(db, older, on_unknown="error")


def test_changed_definition_is_reported_as_drift(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    migrate_db(db, BASIC)
    changed = list(BASIC)
    changed[2] = (
        "add_doc_pages",
        lambda m: m.add_column("doc", "pages", IntegerField(null=False, default=1)),
    )
    drifted = validate_migrations(db, changed)
    assert [d.name for d in drifted] == ["add_doc_pages"]
    assert migrate_db(db, changed).fast_path  # nothing pending: a changed body is never re-run
    caplog.set_level(logging.WARNING, logger="api.db")
    changed.append(
        ("add_doc_lang", lambda m: m.add_column("doc", "lang", CharField(max_length=8, null=True)))
    )
    report = migrate_db(db, changed)  # the locked path compares checksums
    assert report.drift == ["add_doc_pages"] and report.applied == ["add_doc_lang"]
    assert any("changed since they were applied" in r.getMessage() for r in caplog.records)


def test_read_paths_never_create_tables(db: Any) -> None:
    assert [s.status for s in migration_status(db, BASIC)] == ["pending"] * 4
    assert pending_migrations(db, BASIC) == [m[0] if isinstance(m, tuple) else m.name for m in BASIC]
    assert validate_migrations(db, BASIC) == []
    with db.connection_context():
        assert MigrationTracker(db).get_migration_history() == []
        assert not MigrationTracker(db).has_migration_run("create_doc")
    assert tables(db) == set()
    migrate_db(db, BASIC)
    assert pending_migrations(db, BASIC) == []


def test_tracker_api(db: Any) -> None:
    tracker = MigrationTracker(db)
    with db.connection_context():
        tracker.init_tracking_table()
        tracker.init_tracking_table()  # IF NOT EXISTS semantics
        calls: list[int] = []

        @tracker.skip_if_run("seed_defaults")
        def seed() -> None:
            calls.append(1)

        seed()
        seed()
        assert calls == [1] and tracker.has_migration_run("seed_defaults")
        tracker.record_migration("x", "failed", "boom password=hunter2", 12.5)
        assert not tracker.has_migration_run("x")
        row = tracker.history_by_name()["x"]
        assert row.status == "failed" and "hunter2" not in row.error_message and row.duration_ms == 12.5
        assert ":" in (row.installed_by or "")
        with pytest.raises(ValueError):
            tracker.record_migration("x", "done")
        index_columns = {tuple(i.columns) for i in db.get_indexes("migration_history")}
        assert ("migration_name", "status") in index_columns


def _hold_lock(engine: Engine, url: str, stack: contextlib.ExitStack) -> Any:
    """Take the migration lock from another session; return what identifies that session."""
    if engine.family == "sqlite":
        holder = sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)
        stack.callback(holder.close)
        holder.execute("BEGIN IMMEDIATE")
        stack.callback(holder.execute, "ROLLBACK")
        return None
    cur = stack.enter_context(admin_cursor(engine, url))
    if engine.family == "postgres":
        cur.execute("SET application_name = 'apidb-test-holder'")
        cur.execute("SELECT pg_advisory_lock(%s)", (PG_LOCK_KEY,))
        cur.execute("SELECT pg_backend_pid()")
    else:
        cur.execute("SELECT GET_LOCK(%s, 0)", (mysql_lock_name(url.rsplit("/", 1)[1]),))
        cur.execute("SELECT CONNECTION_ID()")
    return cur.fetchone()[0]


def test_lock_timeout_names_the_holder(db: Any, db_url: str, engine: Engine) -> None:
    with contextlib.ExitStack() as stack:
        holder = _hold_lock(engine, db_url, stack)
        with pytest.raises(MigrationLockTimeout) as caught:
            migrate_db(db, BASIC, lock_timeout=0.5)
    text = str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    if engine.family == "postgres":
        assert (
            f"pid={holder}" in text
            and "application_name=apidb-test-holder" in text
            and "backend_start=" in text
        )
    elif engine.family == "mysql":
        assert f"connection_id={holder}" in text and "user=root" in text
    else:
        assert "SQLite does not say which process" in text
    assert tables(db) == set()  # nothing ran
    assert migrate_db(db, BASIC).applied  # free again: it works


@pytest.mark.engines("postgres", "mysql")
def test_lock_is_released_on_the_same_connection(db: Any, db_url: str, engine: Engine) -> None:
    broken = [*BASIC, ("broken", lambda m: m.sql("ALTER TABLE nope ADD COLUMN x INTEGER"))]
    with pytest.raises(MigrationError):
        migrate_db(db, broken)
    migrate_db(db, BASIC)
    if engine.family == "postgres":
        with db.connection_context():  # the pooled connection migrate_db used: nothing session-scoped left
            assert db.execute_sql("SHOW client_connection_check_interval").fetchone()[0] == "0"
            assert not db.execute_sql("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                                      "AND locktype = 'advisory'").fetchone()[0]
    with admin_cursor(engine, db_url) as cur:
        if engine.family == "postgres":
            cur.execute(  # advisory locks of this test's database, not of the whole server
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
            assert cur.fetchone()[0] == 0
            cur.execute("SELECT pg_try_advisory_lock(%s)", (PG_LOCK_KEY,))
        else:
            cur.execute("SELECT IS_FREE_LOCK(%s)", (mysql_lock_name(db_url.rsplit("/", 1)[1]),))
        assert cur.fetchone()[0] in (1, True)


@pytest.mark.engines("postgres")
def test_non_atomic_migration_runs_outside_a_transaction(db: Any) -> None:
    report = migrate_db(
        db,
        [
            BASIC[0],
            Migration(
                "concurrent_index",
                lambda m: m.sql("CREATE INDEX CONCURRENTLY doc_title ON doc (title)"),
                atomic=False,
            ),
        ],
    )
    assert report.applied == ["create_doc", "concurrent_index"]
    assert "doc_title" in {i.name for i in db.get_indexes("doc")}


@pytest.mark.engines("postgres", "mysql")
def test_password_never_in_logs_or_errors(
    engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "Pw-" + uuid.uuid4().hex[:10]
    user = None
    if engine.family == "mysql":
        user = "apidb_u_" + uuid.uuid4().hex[:8]
        dbname = db_url.rsplit("/", 1)[1]
        with admin_cursor(engine) as cur:
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
            cur.execute(f"GRANT ALL ON `{dbname}`.* TO '{user}'@'%'")
        url = db_url.replace("root@", f"{user}:{secret}@")
    else:
        url = db_url.replace("postgres@", f"postgres:{secret}@")  # trust auth accepts any password
    caplog.set_level(logging.DEBUG)
    db = connect(url)
    try:
        migrate_db(db, BASIC)
        texts = []
        with pytest.raises(MigrationError) as caught:
            migrate_db(db, [*BASIC, ("broken", lambda m: m.sql("ALTER TABLE nope ADD COLUMN x INTEGER"))])
        texts.append(str(caught.value))
        texts.append(repr(caught.value))
        texts.append(str(caught.value.statement))
        with db.connection_context():
            texts.extend(str(r.error_message) for r in MigrationTracker(db).get_migration_history())
        texts.extend(r.getMessage() for r in caplog.records)
        assert caplog.records and all(secret not in t for t in texts)
        assert url not in " ".join(texts)
    finally:
        db.close_all()
        if user:
            with admin_cursor(engine) as cur:
                cur.execute(f"DROP USER '{user}'@'%'")


def test_alter_db_helpers(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(10), n VARCHAR(10))")
    migrator = make_schema_migrator(db)
    assert alter_db_add_column(migrator, "doc", "body", TextField(null=True))
    assert alter_db_add_column(migrator, "doc", "body", TextField(null=True))  # already there
    assert alter_db_rename_column(migrator, "doc", "title", "heading")
    assert alter_db_rename_column(migrator, "doc", "title", "heading")  # already renamed
    assert {"body", "heading"} <= columns(db, "doc")
    caplog.set_level(logging.DEBUG, logger="api.db")
    assert not alter_db_add_column(migrator, "nope", "x", IntegerField(null=True))
    assert caplog.records[-1].levelname == "ERROR" and "nope" in caplog.records[-1].getMessage()
    assert alter_db_column_type(migrator, "doc", "n", CharField(max_length=40))


def test_repair(db: Any) -> None:
    broken = [BASIC[0], ("broken", lambda m: m.sql("ALTER TABLE nope ADD COLUMN x INTEGER"))]
    with pytest.raises(MigrationError):
        migrate_db(db, broken)
    assert history(db)["broken"].status == "failed"
    repair_migration(db, "broken", "clear")
    assert "broken" not in history(db)
    with pytest.raises(MigrationError):
        migrate_db(db, broken)
    repair_migration(db, "broken", "mark-applied")
    assert history(db)["broken"].status == "success"
    assert "broken" not in migrate_db(db, broken).pending_before
    with pytest.raises(ValueError, match="only handles failed or running"):
        repair_migration(db, "broken", "clear")


def test_create_tables_operation(db: Any) -> None:
    class Note(Model):
        text = TextField()

        class Meta:
            table_name = "note"

    report = migrate_db(db, [("create_note", lambda m: m.create_tables(Note))])
    assert report.applied == ["create_note"] and "note" in tables(db)
    assert Note._meta.database is None  # bound only for the migration


def test_verify_reports_missing_tables_and_columns(db: Any, caplog: pytest.LogCaptureFixture) -> None:
    class Doc(Model):
        title = CharField()
        summary = TextField()

        class Meta:
            table_name = "doc"

    class Missing(Model):
        class Meta:
            table_name = "missing"

    caplog.set_level(logging.WARNING, logger="api.db")
    report = migrate_db(db, BASIC, verify=[Doc, Missing])
    assert "missing_column doc.summary: expected text, found nothing" in report.schema_differences
    assert "missing_table missing: expected table, found nothing" in report.schema_differences
    logged = [r.getMessage() for r in caplog.records if "schema differs from models" in r.getMessage()]
    assert all(any(d in line for line in logged) for d in report.schema_differences)
