"""Adoption proven by the catalog, create_tables over existing tables, typed schema errors, rich defaults."""

from __future__ import annotations

from typing import Any

import pytest
from peewee import CharField, IntegerField, Model, TextField

from api.db import MigrationError, migrate_db
from api.db.exceptions import MigrationDeclarationError
from api.db.migrate.tracker import MigrationTracker

from engines import Engine


def history(db: Any) -> dict[str, Any]:
    with db.connection_context():
        return {r.migration_name: r for r in MigrationTracker(db).get_migration_history()}


def columns(db: Any, table: str) -> dict[str, Any]:
    with db.connection_context():
        return {c.name: c for c in db.get_columns(table)}


def indexes(db: Any, table: str) -> dict[str, Any]:
    with db.connection_context():
        return {i.name: i for i in db.get_indexes(table)}


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_index_name_taken_by_another_index_is_an_error_not_adoption(db: Any) -> None:
    # The index name add_column(..., index=True) will use is already taken by an index on another column.
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    db.execute_sql("CREATE INDEX doc_source_type ON doc (title)")
    migration = (
        "add_source_type",
        lambda m: m.add_column("doc", "source_type", CharField(max_length=9, null=True, index=True)),
    )
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [migration])
    text = str(caught.value)
    assert "doc_source_type" in text and "title" in text, text
    assert caught.value.category == "duplicate_index"
    row = history(db)["add_source_type"]
    assert row.status == "failed"  # never "skipped (adopted)" with the column missing


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_index_on_the_same_column_is_adopted_and_the_column_stays(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50), source_type VARCHAR(9))")
    db.execute_sql("CREATE INDEX doc_source_type ON doc (source_type)")
    migration = (
        "add_source_type",
        lambda m: m.add_column("doc", "source_type", CharField(max_length=9, null=True, index=True)),
    )
    report = migrate_db(db, [migration])
    assert report.skipped == ["add_source_type"]
    assert "source_type" in columns(db, "doc")


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_existing_column_of_another_type_is_not_adopted(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, pages VARCHAR(10))")
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [("add_pages", lambda m: m.add_column("doc", "pages", IntegerField(null=True)))])
    assert caught.value.category == "duplicate_column"
    assert history(db)["add_pages"].status == "failed"


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_existing_column_of_other_nullability_is_not_adopted(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, pages INTEGER NOT NULL DEFAULT 0)")
    with pytest.raises(MigrationError):
        migrate_db(db, [("add_pages", lambda m: m.add_column("doc", "pages", IntegerField(null=True)))])


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_raw_sql_adoption_is_checked_against_the_named_object(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    db.execute_sql("CREATE INDEX doc_title ON doc (title)")
    report = migrate_db(
        db,
        [
            ("t", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")),
            ("i", lambda m: m.sql("CREATE INDEX doc_title ON doc (title)")),
            ("c", lambda m: m.sql("ALTER TABLE doc ADD COLUMN title VARCHAR(50)")),
            ("d", lambda m: m.sql("ALTER TABLE doc DROP COLUMN legacy")),
        ],
    )
    assert report.skipped == ["t", "i", "c", "d"]


@pytest.mark.engines("postgres")
def test_raw_sql_duplicate_of_an_unparsed_object_is_not_adoption(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [("do", lambda m: m.sql("DO $$ BEGIN CREATE TABLE doc (id INTEGER); END $$"))])
    assert caught.value.category == "duplicate_table"


@pytest.mark.engines("postgres", "sqlite")
def test_raw_create_index_whose_name_a_table_holds_is_not_adoption(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    db.execute_sql("CREATE TABLE doc_title (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError):
        migrate_db(db, [("i", lambda m: m.sql("CREATE INDEX doc_title ON doc (title)"))])
    assert history(db)["i"].status == "failed"


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_raw_create_view_is_adopted_when_the_view_exists(db: Any) -> None:
    db.execute_sql("CREATE VIEW v AS SELECT 1 AS x")
    report = migrate_db(db, [("v", lambda m: m.sql("CREATE VIEW v AS SELECT 1 AS x"))])
    assert report.skipped == ["v"]
    report = migrate_db(
        db,
        [("v", lambda m: m.sql("CREATE VIEW v AS SELECT 1 AS x")), ("w", lambda m: m.sql("DROP VIEW w"))],
    )
    assert report.skipped == ["w"]


@pytest.mark.engines("sqlite")
def test_sqlite_index_on_a_string_constant_is_a_conflict(db: Any) -> None:
    # What create_tables used to leave behind on an older table: "source_type" read as a string.
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    db.execute_sql('CREATE INDEX doc_source_type ON doc ("source_type")')
    migration = (
        "add_source_type",
        lambda m: m.add_column("doc", "source_type", CharField(max_length=9, null=True, index=True)),
    )
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [migration])
    assert "doc_source_type" in str(caught.value) and caught.value.category == "duplicate_index"
    assert "source_type" not in columns(db, "doc")  # rolled back, and recorded failed, not adopted
    assert history(db)["add_source_type"].status == "failed"


class OldDoc(Model):
    title = CharField(max_length=50)

    class Meta:
        table_name = "doc"


class NewDoc(Model):
    title = CharField(max_length=50)
    source_type = CharField(max_length=9, index=True, default="")

    class Meta:
        table_name = "doc"
        indexes = ((("title", "source_type"), False),)


class Note(Model):
    body = TextField()


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_create_tables_leaves_an_existing_older_table_alone(db: Any) -> None:
    with db.bind_ctx([OldDoc]):
        db.create_tables([OldDoc])
    report = migrate_db(db, [("tables", lambda m: m.create_tables(NewDoc, Note))])
    assert report.applied == ["tables"]
    outcome = report.outcomes[0]
    assert outcome.skipped_tables == ("doc",)
    assert "source_type" not in columns(db, "doc")
    assert all("source_type" not in (i.sql or "") for i in indexes(db, "doc").values())
    assert "note" in db.get_tables()
    # Then the column comes in its own migration, with its index: applied, not adopted.
    report = migrate_db(
        db,
        [
            ("tables", lambda m: m.create_tables(NewDoc, Note)),
            (
                "source_type",
                lambda m: m.add_column(
                    "doc", "source_type", CharField(max_length=9, index=True, default="")
                ),
            ),
        ],
    )
    assert report.applied == ["source_type"]
    assert "source_type" in columns(db, "doc")


@pytest.mark.engines("postgres", "sqlite", "mysql")
def test_create_tables_on_existing_tables_only_is_adopted(db: Any) -> None:
    with db.bind_ctx([Note]):
        db.create_tables([Note])
    report = migrate_db(db, [("tables", lambda m: m.create_tables(Note))])
    assert report.skipped == ["tables"]
    assert report.outcomes[0].skipped_tables == ("note",)


@pytest.mark.engines("mysql", "postgres", "sqlite")
def test_rename_of_a_missing_column_is_a_typed_missing_column_error(db: Any) -> None:
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(50))")
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [("rename", lambda m: m.rename_column("doc", "pages", "page_count"))])
    err = caught.value
    assert err.category == "missing_column", str(err)
    assert "doc" in str(err) and "pages" in str(err)
    assert "'bool' object" not in str(err) and "DESCRIBE" not in (err.statement or "")


@pytest.mark.engines("postgres")
def test_index_name_taken_on_another_table_is_named(db: Any) -> None:
    # PostgreSQL index names are per schema: the CREATE INDEX fails, the savepoint takes the column back.
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE other (id INTEGER PRIMARY KEY, kind VARCHAR(9))")
    db.execute_sql("CREATE INDEX doc_source_type ON other (kind)")
    migration = (
        "add_source_type",
        lambda m: m.add_column("doc", "source_type", CharField(max_length=9, null=True, index=True)),
    )
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [migration])
    assert "doc_source_type" in str(caught.value) and "other (kind)" in str(caught.value)
    assert caught.value.category == "duplicate_index"
    assert history(db)["add_source_type"].status == "failed"
    assert "source_type" not in columns(db, "doc")


@pytest.mark.engines("mysql")
def test_mysql_column_left_without_its_index_gets_the_index(db: Any) -> None:
    # A MySQL run stopped between ADD COLUMN and CREATE INDEX: the replay finds the column, builds the index.
    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, source_type VARCHAR(9))")
    migration = (
        "add_source_type",
        lambda m: m.add_column("doc", "source_type", CharField(max_length=9, null=True, index=True)),
    )
    report = migrate_db(db, [migration])
    assert report.applied == ["add_source_type"]
    assert [i.columns for i in indexes(db, "doc").values() if i.name == "doc_source_type"] == [
        ["source_type"]
    ]


@pytest.mark.parametrize("name", ["a\x00b", "a\nb"])
def test_a_control_character_in_a_name_fails_before_any_table_is_created(db: Any, name: str) -> None:
    with pytest.raises(MigrationDeclarationError, match="control character"):
        migrate_db(db, [(name, lambda m: m.sql("CREATE TABLE t (id INTEGER)"))])
    with db.connection_context():
        assert db.get_tables() == []  # not even the tracking tables


def test_alter_db_add_column_checks_the_catalog(db: Any) -> None:
    from api.db.migrate.alter import alter_db_add_column
    from api.db.migrate.runner import make_schema_migrator

    db.execute_sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, pages VARCHAR(10))")
    migrator = make_schema_migrator(db)
    assert not alter_db_add_column(migrator, "doc", "pages", IntegerField(null=True))  # there, but text
    assert alter_db_add_column(migrator, "doc", "pages", CharField(max_length=10, null=True))


@pytest.mark.engines("postgres", "mysql")
def test_constraints_and_foreign_keys_are_adopted_from_the_catalog(engine: Engine, db: Any) -> None:
    from peewee import SQL

    db.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    db.execute_sql("CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER, n INTEGER)")
    db.execute_sql("ALTER TABLE child ADD CONSTRAINT fk_child_parent_id_refs_parent "
                   "FOREIGN KEY (parent_id) REFERENCES parent (id)")
    db.execute_sql("ALTER TABLE child ADD CONSTRAINT n_positive CHECK (n > 0)")
    db.execute_sql("ALTER TABLE child ADD CONSTRAINT uniq_n UNIQUE (n)")
    # MariaDB reports a taken foreign key name as errno 1005 ("errno: 121"), which is not "already there":
    # the foreign key case runs where the error says so (PostgreSQL 42710, MySQL 1826).
    fk = [("fk", lambda m: m.add_foreign_key_constraint("child", "parent_id", "parent", "id"))]
    fk = fk if engine.family == "postgres" else []
    report = migrate_db(db, [
        *fk,
        ("check", lambda m: m.add_constraint("child", "n_positive", SQL("CHECK (n > 0)"))),
        ("unique", lambda m: m.add_unique("child", "n")),
        ("drop_gone", lambda m: m.drop_constraint("child", "never_there")),
        ("drop_table", lambda m: m.drop_table("never_there")),
    ])
    expected = [n for n, _ in fk] + ["check", "unique", "drop_gone", "drop_table"]
    assert report.skipped == expected, report.summary()
