"""Rolling back through recorded inverses and declared downs, on real servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rollback_app import EDITED, MIGRATIONS

from api.db import Migration, connect, migrate_db
from api.db.engines import engine_for
from api.db.exceptions import IrreversibleMigration, MigrationError
from api.db.migrate.rollback import rollback_db
from api.db.migrate.tracker import HISTORY_TABLE, STATE_TABLE, MigrationTracker

CHILD = str(Path(__file__).resolve().parents[1] / "rollback_app.py")
NAMES = [m[0] for m in MIGRATIONS]


def schema(db: Any) -> dict[str, Any]:
    """Columns (type, nullability, default), indexes and foreign keys of every table, from the catalog."""
    engine = engine_for(db)
    found: dict[str, Any] = {}
    with db.connection_context():
        for table in sorted(set(db.get_tables()) - {HISTORY_TABLE, STATE_TABLE}):
            columns = {c.name: (str(engine.column_type_sql(table, c.name)).lower(), bool(c.null),
                                engine.column_default_sql(table, c.name)) for c in db.get_columns(table)}
            indexes = sorted((i.name, tuple(i.columns), bool(i.unique)) for i in db.get_indexes(table))
            fks = sorted((f.column, f.dest_table, f.dest_column) for f in db.get_foreign_keys(table))
            found[table] = {"columns": columns, "indexes": indexes, "fks": fks}
    return found


def statuses(db: Any) -> dict[str, str]:
    with db.connection_context():
        return {r.migration_name: r.status for r in MigrationTracker(db).get_migration_history()}


@pytest.fixture
def other(engine: Any) -> Iterator[Any]:
    """A second fresh database on the same engine."""
    url = engine.create_database()
    database = connect(url)
    try:
        yield database
    finally:
        getattr(database, "close_all", database.close)()
        engine.drop_database(url)


def _seed(db: Any) -> None:
    with db.connection_context():
        db.execute_sql("INSERT INTO author (id, name, bio) VALUES (1, 'ann', 'x'), (2, 'bob', NULL)")
        db.execute_sql("INSERT INTO book (id, title, author_id) VALUES (1, 'one', 1), (2, 'two', 2)")


def test_roll_back_to_the_second_and_forward_again(db: Any, other: Any) -> None:
    migrate_db(db, MIGRATIONS, target="create_book")
    _seed(db)
    report = migrate_db(db, MIGRATIONS)
    assert report.applied == NAMES[2:]
    full = schema(db)
    migrate_db(other, MIGRATIONS, target="create_book")
    second = schema(other)
    assert full != second

    rolled = rollback_db(db, MIGRATIONS, to="create_book")
    assert rolled.rolled_back == NAMES[:1:-1]
    assert schema(db) == second
    assert statuses(db) == {**dict.fromkeys(NAMES[:2], "success"), **dict.fromkeys(NAMES[2:], "rolled_back")}
    with db.connection_context():
        rows = db.execute_sql("SELECT a.name, a.bio, b.title FROM author a JOIN book b ON b.author_id = a.id "
                              "ORDER BY a.id").fetchall()
    assert [tuple(r) for r in rows] == [("ann", "x", "one"), ("bob", None, "two")]

    again = migrate_db(db, MIGRATIONS)
    assert again.applied == NAMES[2:]
    migrate_db(other, MIGRATIONS)
    assert schema(db) == schema(other) == full


def test_the_recorded_inverse_survives_edited_up_functions(db: Any, other: Any) -> None:
    migrate_db(db, MIGRATIONS)
    migrate_db(other, MIGRATIONS, target="create_book")
    rollback_db(db, EDITED, to="create_book")
    assert schema(db) == schema(other)


def test_an_irreversible_migration_stops_before_anything_changes(db: Any) -> None:
    raw = ("raw_sql", lambda m: m.sql("CREATE TABLE scratch (id INTEGER PRIMARY KEY)"))
    declared = [*MIGRATIONS, raw]
    migrate_db(db, declared)
    before, history = schema(db), statuses(db)
    with pytest.raises(IrreversibleMigration) as caught:
        rollback_db(db, declared, to="create_book")
    assert caught.value.migration == "raw_sql" and "sql(" in caught.value.operation
    assert schema(db) == before and statuses(db) == history


def _fails(m: Any) -> None:
    m.rename_column("author", "biography", "bio")
    raise RuntimeError("the down function stops half way")


def test_a_rollback_failing_half_way(db: Any, other: Any) -> None:
    migrate_db(db, MIGRATIONS)
    full = schema(db)
    failing = [*MIGRATIONS[:3], Migration(NAMES[3], MIGRATIONS[3].fn, _fails), *MIGRATIONS[4:]]
    with pytest.raises(MigrationError) as caught:
        rollback_db(db, failing, to="create_book")
    assert caught.value.migration == NAMES[3]
    migrate_db(other, MIGRATIONS, target="create_book")
    if engine_for(db).transactional_ddl():
        assert schema(db) == full
        assert set(statuses(db).values()) == {"success"}
    else:
        assert statuses(db)[NAMES[5]] == "rolled_back" and statuses(db)[NAMES[3]] == "rolling_back"
        rollback_db(db, MIGRATIONS, to="create_book")  # resumes: 4th, then 3rd
        assert schema(db) == schema(other)
        assert statuses(db)[NAMES[3]] == "rolled_back"


def test_rollback_and_migrate_from_two_processes_are_serialized(db: Any, db_url: str) -> None:
    migrate_db(db, MIGRATIONS)
    children = [subprocess.Popen([sys.executable, CHILD, db_url, action], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=dict(os.environ))
                for action in ("rollback", "migrate")]  # fmt: skip
    reports = []
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    state = statuses(db)
    assert reports[0]["rolled_back"] == NAMES[:3:-1]
    if reports[1]["applied"]:  # the migrate waited for the rollback, then applied the two again
        assert reports[1]["applied"] == NAMES[4:] and set(state.values()) == {"success"}
    else:  # the migrate went first (nothing pending), then the rollback
        assert [state[n] for n in NAMES[4:]] == ["rolled_back"] * 2


def test_a_rollback_preview_changes_nothing(db: Any) -> None:
    from api.db import preview_migration

    migrate_db(db, MIGRATIONS)
    before, history = schema(db), statuses(db)
    preview = preview_migration(db, MIGRATIONS, rollback_to="create_book")
    assert preview.pending == NAMES[:1:-1]
    text = " ".join(preview.sql_statements).upper()
    assert "DROP" in text and "TAG" in text
    assert any(w.code == "data_loss" and w.migration == "age_and_index" for w in preview.warnings)
    assert schema(db) == before and statuses(db) == history
