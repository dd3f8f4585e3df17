"""The harness really reaches each engine, and each test gets a database of its own."""

from __future__ import annotations

import pytest

from api.db import connect, server_info
from api.db.engines import db_type

from engines import Engine

# A query only one engine understands, and what it answers.
ONLY_HERE = {
    "postgres": ("SELECT 'a'::text || repeat('b', 2)", "abb"),
    "mysql": ("SELECT CONCAT_WS('-', 'a', 'b')", "a-b"),
    "sqlite": ("SELECT sqlite_version() IS NOT NULL", 1),
}


def test_engine_is_really_used(engine: Engine, db) -> None:
    info = server_info(db)
    assert info.engine == engine.family == db_type(db)
    assert info.version_string in engine.version or engine.family == "sqlite"
    sql, expected = ONLY_HERE[engine.family]
    assert db.execute_sql(sql).fetchone()[0] == expected
    if engine.family == "mysql":
        assert info.flavour in ("mysql", "mariadb")
        assert ("MariaDB" in info.version_string) == (info.flavour == "mariadb")
    if engine.family == "postgres":
        assert info.version >= (12,)


def test_fresh_database_per_test_part_one(db) -> None:
    assert db.get_tables() == []
    db.execute_sql("CREATE TABLE isolation_probe (id INTEGER PRIMARY KEY)")
    assert "isolation_probe" in db.get_tables()


def test_fresh_database_per_test_part_two(db) -> None:
    assert "isolation_probe" not in db.get_tables()


@pytest.mark.engines("postgres", "mysql")
def test_pooled_engines_reuse_connections(db_url: str) -> None:
    database = connect(db_url)
    try:
        database.connect()
        first = database.connection()
        database.close()
        database.connect()
        assert database.connection() is first, "the pool must hand back the idle connection"
    finally:
        database.close_all()


@pytest.mark.engines("pgvector", "pgvector_legacy")
def test_pgvector_engines_have_the_extension(engine: Engine, db) -> None:
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS vector")
    info = server_info(db)
    expected = "0.8" if engine.name == "pgvector" else "0.6"
    assert info.extensions["vector"].startswith(expected)
    db.execute_sql("CREATE TABLE emb (id serial PRIMARY KEY, v vector(3))")
    db.execute_sql("INSERT INTO emb (v) VALUES ('[1,2,3]')")
    assert db.execute_sql("SELECT v <-> '[1,2,4]' FROM emb").fetchone()[0] == pytest.approx(1.0)
