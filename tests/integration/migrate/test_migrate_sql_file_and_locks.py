"""migrate_db end to end with the pieces around it: SQL-file migrations, per-migration lock
bounds through the lock-safe migrator, and schema verification after migrating."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import peewee
import pytest

from api.db import Migration, MigrationError, connect, migrate_db
from api.db.migrate.sqlfile import SQLFileError
from api.db.migrate.tracker import MigrationTracker

from engines import Engine, admin_cursor

PG_SCHEMA = """
-- documents and a trigger that stamps them; the body holds semicolons
CREATE TABLE doc (id serial PRIMARY KEY, body text NOT NULL, note text NOT NULL DEFAULT '100%');
CREATE FUNCTION doc_mark() RETURNS trigger AS $fn$
BEGIN
  NEW.body := NEW.body || ';marked';
  RETURN NEW;
END;
$fn$ LANGUAGE plpgsql;
CREATE TRIGGER doc_mark BEFORE INSERT ON doc FOR EACH ROW EXECUTE FUNCTION doc_mark();
CREATE INDEX doc_body ON doc (body);
"""

PORTABLE_SCHEMA = """
CREATE TABLE doc (id INTEGER PRIMARY KEY, body VARCHAR(100) NOT NULL, note VARCHAR(20) DEFAULT '100%');
CREATE INDEX doc_body ON doc (body);
"""


def statuses(db: Any) -> dict[str, str]:
    with db.connection_context():
        return {row.migration_name: row.status for row in MigrationTracker(db).get_migration_history()}


def test_sql_file_migration_applies_once(engine: Engine, db: Any, tmp_path: Path) -> None:
    path = tmp_path / "001_schema.sql"
    path.write_text(PG_SCHEMA if engine.family == "postgres" else PORTABLE_SCHEMA, encoding="utf-8")
    migrations = [Migration.from_sql_file("001_schema", path)]
    first = migrate_db(db, migrations)
    assert first.applied == ["001_schema"]
    assert statuses(db) == {"001_schema": "success"}
    with db.connection_context():
        db.execute_sql("INSERT INTO doc (id, body) VALUES (1, 'x')")
        body, note = db.execute_sql("SELECT body, note FROM doc").fetchone()
    assert note == "100%"
    assert body == ("x;marked" if engine.family == "postgres" else "x")
    second = migrate_db(db, migrations)
    assert second.applied == [] and second.fast_path


def test_sql_file_adopts_an_existing_schema(engine: Engine, db: Any, tmp_path: Path) -> None:
    script = PG_SCHEMA if engine.family == "postgres" else PORTABLE_SCHEMA
    with db.connection_context():
        # An older deployment created everything by hand, untracked.
        from api.db.migrate.sqlfile import split_sql

        for statement in split_sql(script):
            # peewee hands psycopg2/PyMySQL a params tuple, so a literal % must be doubled here.
            db.execute_sql(statement if engine.family == "sqlite" else statement.replace("%", "%%"))
    path = tmp_path / "schema.sql"
    path.write_text(script, encoding="utf-8")
    report = migrate_db(db, [Migration.from_sql_file("001_schema", path)])
    assert report.failed == []
    assert statuses(db) == {"001_schema": "skipped"}, "every statement found its object already there"


def test_missing_sql_file_fails_at_declaration(tmp_path: Path) -> None:
    with pytest.raises(SQLFileError, match="does not exist"):
        Migration.from_sql_file("001", tmp_path / "missing.sql")
    empty = tmp_path / "empty.sql"
    empty.write_text("-- nothing here\n", encoding="utf-8")
    with pytest.raises(SQLFileError, match="no statement"):
        Migration.from_sql_file("001", empty)


def test_sql_file_checksum_follows_the_file(tmp_path: Path) -> None:
    path = tmp_path / "a.sql"
    path.write_text("CREATE TABLE a (id INTEGER);", encoding="utf-8")
    first = Migration.from_sql_file("a", path).checksum
    path.write_text("CREATE TABLE a (id BIGINT);", encoding="utf-8")
    assert Migration.from_sql_file("a", path).checksum != first


@pytest.mark.engines("postgres", "mysql")
def test_blocked_ddl_fails_fast_and_names_the_blocker(engine: Engine, db: Any, db_url: str) -> None:
    with db.connection_context():
        db.execute_sql("CREATE TABLE busy (id INTEGER PRIMARY KEY, v INTEGER)")
        db.execute_sql("INSERT INTO busy VALUES (1, 1)")
    release = threading.Event()
    holding = threading.Event()

    def blocker() -> None:
        with admin_cursor(engine, db_url) as cur:
            cur.execute("BEGIN")
            cur.execute(
                "SELECT v FROM busy FOR UPDATE"
                if engine.family == "mysql"
                else "LOCK TABLE busy IN SHARE MODE"
            )
            holding.set()
            release.wait(20)
            cur.execute("ROLLBACK")

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    assert holding.wait(10)
    migration = Migration(
        "add_flag",
        lambda m: m.add_column("busy", "flag", peewee.IntegerField(default=0)),
        lock_timeout=0.5,
        lock_retries=1,
    )
    started = time.monotonic()
    try:
        with pytest.raises(MigrationError) as info:
            migrate_db(db, [migration], lock_timeout=10)
    finally:
        release.set()
        thread.join(10)
    elapsed = time.monotonic() - started
    assert elapsed < 8, f"a bounded lock wait must not queue for {elapsed:.1f}s"
    text = str(info.value)
    assert "add_flag" in text and "lock" in text.lower()
    assert statuses(db)["add_flag"] == "failed"
    # Once the blocker is gone the next boot applies it.
    assert migrate_db(db, [migration]).applied == ["add_flag"]


def test_verify_reports_model_differences(db: Any) -> None:
    class Thing(peewee.Model):
        name = peewee.CharField(max_length=50, index=True)
        size = peewee.IntegerField(default=0)

        class Meta:
            table_name = "thing"

    Thing._meta.database = db
    migrations = [
        ("create_thing",
         lambda m: m.sql("CREATE TABLE thing (id INTEGER PRIMARY KEY, name VARCHAR(50) NOT NULL)"))
    ]
    report = migrate_db(db, migrations, verify=[Thing])
    assert any("missing_column thing.size" in d for d in report.schema_differences)
    assert any("missing_index thing.name" in d for d in report.schema_differences)
    fixed = [*migrations, ("add_size", lambda m: m.add_column("thing", "size",
                                                              peewee.IntegerField(default=0))),
             ("index_name", lambda m: m.add_index("thing", ("name",)))]
    assert migrate_db(db, fixed, verify=[Thing]).schema_differences == []


def test_connect_url_reaches_the_migrator(db_url: str) -> None:
    database = connect(db_url)
    try:
        report = migrate_db(database, [("t", lambda m: m.sql("CREATE TABLE t (id INTEGER PRIMARY KEY)"))])
        assert report.applied == ["t"]
    finally:
        close_all = getattr(database, "close_all", None)
        (close_all or database.close)()
