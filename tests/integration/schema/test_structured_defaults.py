"""add_column of PostgreSQL's structured fields (JSON, JSONB, arrays, hstore) with a default.

Each column must hold what playhouse itself stores for the same field: a table created by
playhouse's create_table, a row inserted through the model without the column, is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee
import pytest
from playhouse.postgres_ext import ArrayField, BinaryJSONField, HStoreField, JSONField

from api.db import migrate_db

from engines import Engine, admin_cursor


def column_default(db: Any, table: str, column: str) -> Any:
    return db.execute_sql(
        "SELECT column_default FROM information_schema.columns WHERE table_name = %s AND column_name = %s",
        (table, column),
    ).fetchone()[0]


def playhouse_reference(db: Any, make_field: Callable[[], peewee.Field]) -> tuple[Any, Any]:
    """(the value as text, the catalog default) of a row playhouse inserts without naming the column."""

    class Ref(peewee.Model):
        col = make_field()

        class Meta:
            database = db
            table_name = "ref"

    db.create_tables([Ref])
    Ref.insert({Ref.id: 1}).execute()
    value = db.execute_sql("SELECT col::text FROM ref").fetchone()[0]
    return value, column_default(db, "ref", "col")


FIELDS: dict[str, Callable[[], peewee.Field]] = {
    "jsonb_null": lambda: BinaryJSONField(default=dict, null=True),
    "json": lambda: JSONField(default=dict),
    "jsonb_document": lambda: BinaryJSONField(default=lambda: {"a": [1, "x'y"], "b": None}),
    "array_null": lambda: ArrayField(peewee.CharField, default=list, null=True),
    "array_values": lambda: ArrayField(peewee.CharField, default=lambda: ["a", 'b"c', "d\\e", "f g", "{h}"]),
    "int_array": lambda: ArrayField(peewee.IntegerField, default=lambda: [1, 2, 3]),
    "hstore": lambda: HStoreField(default=dict),
    "hstore_values": lambda: HStoreField(default=lambda: {"k": "v", 'q"': "a\\b", "n": None}),
}


def _hstore_ready(engine: Engine, db_url: str, db: Any) -> None:
    with admin_cursor(engine) as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'hstore'")
        if cur.fetchone() is None:
            pytest.skip(f"the {engine.name} server has no hstore extension (contrib) installed")
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS hstore")
    import psycopg2.extras

    psycopg2.extras.register_hstore(db.connection())  # what PostgresqlExtDatabase(register_hstore=True) does


@pytest.mark.engines("postgres")
@pytest.mark.parametrize("kind", list(FIELDS))
def test_structured_default_matches_playhouse(engine: Engine, db_url: str, db: Any, kind: str) -> None:
    make_field = FIELDS[kind]
    with db.connection_context():
        if kind.startswith("hstore"):
            _hstore_ready(engine, db_url, db)
        expected_value, expected_default = playhouse_reference(db, make_field)
        db.execute_sql("CREATE TABLE doc (id SERIAL PRIMARY KEY)")
        db.execute_sql("INSERT INTO doc DEFAULT VALUES")
    report = migrate_db(db, [("add_col", lambda m: m.add_column("doc", "col", make_field()))])
    assert report.applied == ["add_col"]
    with db.connection_context():
        value = db.execute_sql("SELECT col::text FROM doc").fetchone()[0]
        assert value == expected_value
        assert column_default(db, "doc", "col") == expected_default
