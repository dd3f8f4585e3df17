"""rehearse_migrations against real databases: real durations, the target untouched, the scratch gone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from peewee import CharField, IntegerField

from api.db import Migration, connect, migrate_db
from api.db.cli import main
from api.db.engines import engine_for
from api.db.exceptions import RehearsalError, ScratchDatabaseDenied
from api.db.migrate.tracker import MigrationTracker
from api.db.preview.rehearse import rehearse_migrations

from engines import admin_cursor

BASE = [
    Migration("create_task", lambda m: m.sql(
        "CREATE TABLE task (id INTEGER PRIMARY KEY, name VARCHAR(40), n INTEGER)")),
    Migration("create_note", lambda m: m.sql(
        "CREATE TABLE note (id INTEGER PRIMARY KEY, task_id INTEGER REFERENCES task (id), "
        "body VARCHAR(80))")),
]
PENDING = [
    Migration("add_priority", lambda m: m.add_column("task", "priority", IntegerField(default=0))),
    Migration("index_name", lambda m: m.add_index("task", ("name",))),
    Migration("add_label", lambda m: m.add_column("note", "label", CharField(max_length=20, null=True))),
]
FAILING = Migration("alter_missing", lambda m: m.sql("ALTER TABLE missing ADD COLUMN x INTEGER"))


def seed(db: Any, rows: int = 200) -> None:
    migrate_db(db, BASE)
    with db.atomic():
        for i in range(1, rows + 1):
            db.execute_sql(f"INSERT INTO task (id, name, n) VALUES ({i}, 'task {i}', {i})")
        for i in range(1, rows + 1):
            db.execute_sql(f"INSERT INTO note (id, task_id, body) VALUES ({i}, {rows + 1 - i}, 'note')")


def snapshot(db: Any) -> dict[str, Any]:
    """Tables, columns, indexes, row counts and the history of the target."""
    with db.connection_context():
        tables = sorted(db.get_tables())
        return {
            "tables": tables,
            "columns": {t: [(c.name, c.data_type, c.null) for c in db.get_columns(t)] for t in tables},
            "indexes": {
                t: sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(t)) for t in tables
            },
            "rows": {t: db.execute_sql(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("task", "note")},
            "history": [
                (r.migration_name, r.status, r.checksum) for r in MigrationTracker(db).get_migration_history()
            ],
        }


def watch_scratch(monkeypatch: Any, db: Any) -> list[str]:
    """The scratch names the engine creates, for checking they are gone."""
    names: list[str] = []
    engine_class = type(engine_for(db))
    original = engine_class.create_scratch

    def create(self: Any, name: str) -> None:
        names.append(name)
        original(self, name)

    monkeypatch.setattr(engine_class, "create_scratch", create)
    return names


def test_rehearse_on_data(db: Any, monkeypatch: Any) -> None:
    seed(db)
    before = snapshot(db)
    names = watch_scratch(monkeypatch, db)
    report = rehearse_migrations(db, BASE + PENDING, rows=50)
    assert report.ok and [m.name for m in report.migrations] == ["add_priority", "index_name", "add_label"]
    assert all(
        m.status == "success" and m.duration_ms is not None and m.duration_ms > 0 for m in report.migrations
    )
    assert all(m.locks and m.statements >= 1 for m in report.migrations)
    assert {"task", "note", "migration_history"} <= set(report.tables)
    assert report.scratch_dropped and names == [report.scratch]
    assert not engine_for(db).scratch_exists(report.scratch)
    assert snapshot(db) == before


def test_rehearse_failing_migration(db: Any, monkeypatch: Any) -> None:
    seed(db, rows=20)
    before = snapshot(db)
    names = watch_scratch(monkeypatch, db)
    report = rehearse_migrations(db, BASE + [PENDING[0], FAILING, PENDING[1]], rows=5)
    statuses = [(m.name, m.status) for m in report.migrations]
    assert statuses == [("add_priority", "success"), ("alter_missing", "failed"), ("index_name", "not_run")]
    failed = report.migrations[1]
    assert not report.ok and failed.error and "missing" in failed.error and failed.duration_ms is not None
    assert report.scratch_dropped and not engine_for(db).scratch_exists(names[0])
    assert snapshot(db) == before


def test_scratch_dropped_when_the_copy_fails(db: Any, monkeypatch: Any) -> None:
    seed(db, rows=3)
    names = watch_scratch(monkeypatch, db)

    def broken(self: Any, scratch: Any, rows: int, whole: Any) -> list[str]:
        raise RuntimeError("copy failed")

    monkeypatch.setattr(type(engine_for(db)), "copy_into_scratch", broken)
    with pytest.raises(RuntimeError, match="copy failed"):
        rehearse_migrations(db, BASE + PENDING)
    assert names and not engine_for(db).scratch_exists(names[0])


def test_nothing_pending(db: Any) -> None:
    seed(db, rows=2)
    report = rehearse_migrations(db, BASE)
    assert report.ok and report.migrations == [] and report.scratch_dropped


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, f"{user}:{password}@{parts.hostname}:{parts.port}", parts.path, "", ""))


@pytest.mark.engines("postgres")
def test_postgres_role_without_createdb(engine: Any, db_url: str) -> None:
    role = f"apidb_t_nocreatedb_{uuid.uuid4().hex[:8]}"
    with admin_cursor(engine) as cur:
        cur.execute(f"CREATE ROLE {role} LOGIN NOCREATEDB PASSWORD 'rehearse-pw'")
    database = connect(with_user(db_url, role, "rehearse-pw"))
    try:
        with pytest.raises(ScratchDatabaseDenied, match="CREATEDB") as caught:
            rehearse_migrations(database, PENDING)
        assert caught.value.privilege == "CREATEDB"
    finally:
        database.close_all()
        with admin_cursor(engine) as cur:
            cur.execute(f"DROP ROLE {role}")


@pytest.mark.engines("mysql")
def test_mysql_user_without_create(engine: Any, db_url: str) -> None:
    user, name = f"apidb_t_nocreate_{uuid.uuid4().hex[:8]}", urlsplit(db_url).path.lstrip("/")
    with admin_cursor(engine) as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'rehearse-pw'")
        cur.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{name}`.* TO '{user}'@'%'")
    database = connect(with_user(db_url, user, "rehearse-pw"))
    try:
        with pytest.raises(ScratchDatabaseDenied, match="CREATE") as caught:
            rehearse_migrations(database, PENDING)
        assert caught.value.privilege == "CREATE"
    finally:
        database.close_all()
        with admin_cursor(engine) as cur:
            cur.execute(f"DROP USER '{user}'@'%'")


@pytest.mark.engines("sqlite")
def test_cli(
    db: Any, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    seed(db, rows=10)
    (tmp_path / "rehearsed_migrations.py").write_text(
        "from api.db import Migration\n"
        "OK = [Migration('create_task', lambda m: None), Migration('create_note', lambda m: None),\n"
        "      Migration('add_col', lambda m: m.sql('ALTER TABLE task ADD COLUMN extra INTEGER'))]\n"
        "BAD = OK + [Migration('bad', lambda m: m.sql('ALTER TABLE missing ADD COLUMN x INTEGER'))]\n"
    )
    monkeypatch.chdir(tmp_path)
    base = ["--database", db_url, "--migrations"]
    assert main([*base, "rehearsed_migrations:OK", "rehearse", "--rows", "3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] and data["scratch_dropped"] and data["migrations"][0]["name"] == "add_col"
    assert main([*base, "rehearsed_migrations:BAD", "rehearse"]) == 1
    out = capsys.readouterr().out
    assert "failed: bad" in out and "scratch database dropped" in out


@pytest.mark.engines("postgres")
def test_postgres_pg_dump_of_another_version(db: Any, tmp_path: Path, monkeypatch: Any) -> None:
    seed(db, rows=2)
    fake = tmp_path / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("API_DB_PG_DUMP", str(fake))
    names = watch_scratch(monkeypatch, db)
    with pytest.raises(RehearsalError, match="set API_DB_PG_DUMP to a pg_dump"):
        rehearse_migrations(db, BASE + PENDING)
    assert names and not engine_for(db).scratch_exists(names[0])
