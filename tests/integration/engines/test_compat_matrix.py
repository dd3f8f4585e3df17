"""Every flag of DatabaseCompat's matrix, checked against what the live engine really does.

Each test observes the behaviour the flag describes on the live server, then
asserts that ``DatabaseCompat.for_database(db)`` says the same thing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import peewee
import pytest

from api.db import DatabaseCompat, connect
from api.db.engines import db_type


def _works(db: peewee.Database, *statements: str) -> bool:
    """True when every statement runs; False at the first the engine refuses."""
    try:
        for sql in statements:
            db.execute_sql(sql)
    except peewee.DatabaseError:
        return False
    return True


def _scalar(db: peewee.Database, sql: str) -> Any:
    return db.execute_sql(sql).fetchone()[0]


def _scalar_params(db: peewee.Database, sql: str, params: tuple[Any, ...]) -> Any:
    return db.execute_sql(sql, params).fetchone()[0]


@pytest.fixture
def compat(db: peewee.Database) -> DatabaseCompat:
    return DatabaseCompat.for_database(db)


@pytest.fixture
def other(db_url: str) -> Iterator[peewee.Database]:
    """A second, independent connection to the same database."""
    second = connect(db_url)
    try:
        yield second
    finally:
        close_all = getattr(second, "close_all", None)
        close_all() if close_all else second.close()


def test_transactional_ddl(db: peewee.Database, compat: DatabaseCompat) -> None:
    with db.atomic() as transaction:
        db.execute_sql("CREATE TABLE ddl_probe (id INTEGER)")
        transaction.rollback()
    rolled_back = "ddl_probe" not in db.get_tables()
    assert rolled_back == compat.get("transactional_ddl")


def test_advisory_locks(db: peewee.Database, other: peewee.Database, compat: DatabaseCompat) -> None:
    name = f"apidb_probe_{uuid.uuid4().hex[:12]}"
    candidates = ["SELECT pg_try_advisory_lock(hashtext(%s))", "SELECT GET_LOCK(%s, 0)"]
    observed = False
    for sql in candidates:
        try:
            first = db.execute_sql(sql, (name,)).fetchone()[0]
        except peewee.DatabaseError:
            continue  # this engine has no such function
        second = other.execute_sql(sql, (name,)).fetchone()[0]
        observed = bool(first) and not bool(second)  # held by one session, refused to the other
        break
    assert observed == compat.get("advisory_locks")


def test_add_column_if_not_exists(db: peewee.Database, compat: DatabaseCompat) -> None:
    db.execute_sql("CREATE TABLE probe (id INTEGER)")
    statement = "ALTER TABLE probe ADD COLUMN IF NOT EXISTS extra INTEGER"
    observed = _works(db, statement, statement)
    assert observed == compat.get("add_column_if_not_exists")


def test_instant_add_column(db: peewee.Database, compat: DatabaseCompat) -> None:
    engine = db_type(db)
    db.execute_sql("CREATE TABLE probe (id INTEGER PRIMARY KEY, v INTEGER)")
    db.execute_sql("INSERT INTO probe (id, v) VALUES " + ", ".join(f"({i}, {i})" for i in range(1, 2001)))
    if engine == "postgres":
        before = _scalar(db, "SELECT pg_relation_filenode('probe')")
        db.execute_sql("ALTER TABLE probe ADD COLUMN extra INTEGER NOT NULL DEFAULT 5")
        after = _scalar(db, "SELECT pg_relation_filenode('probe')")
        stored_once = _scalar(db, "SELECT atthasmissing FROM pg_attribute WHERE attrelid = 'probe'::regclass "
                                  "AND attname = 'extra'")
        observed = before == after and stored_once  # no rewrite: the default lives in the catalogue
    elif engine == "mysql":
        observed = _works(
            db, "ALTER TABLE probe ADD COLUMN extra INTEGER NOT NULL DEFAULT 5, ALGORITHM=INSTANT"
        )
    else:
        before = _scalar(db, "PRAGMA page_count")
        db.execute_sql("ALTER TABLE probe ADD COLUMN extra INTEGER NOT NULL DEFAULT 5")
        observed = _scalar(db, "PRAGMA page_count") == before
    if observed:
        assert _scalar(db, "SELECT count(*) FROM probe WHERE extra = 5") == 2000
    assert observed == compat.get("instant_add_column")


def test_concurrent_index(db: peewee.Database, compat: DatabaseCompat) -> None:
    db.execute_sql("CREATE TABLE probe (id INTEGER PRIMARY KEY, v INTEGER)")
    observed = _works(db, "CREATE INDEX CONCURRENTLY probe_v ON probe (v)") or _works(
        db, "CREATE INDEX probe_v2 ON probe (v) ALGORITHM=INPLACE LOCK=NONE"
    )
    assert observed == compat.get("concurrent_index")


def test_lock_timeout_setting(db: peewee.Database, compat: DatabaseCompat) -> None:
    probes = {
        "lock_timeout": ("SET lock_timeout = '1234ms'", "SHOW lock_timeout", "1234ms"),
        "lock_wait_timeout": (
            "SET SESSION lock_wait_timeout = 1234",
            "SELECT @@SESSION.lock_wait_timeout",
            1234,
        ),
        "busy_timeout": ("PRAGMA busy_timeout = 1234", "PRAGMA busy_timeout", 1234),
    }
    observed = None
    for setting, (set_sql, read_sql, expected) in probes.items():
        if _works(db, set_sql) and _works(db, read_sql) and _scalar(db, read_sql) == expected:
            observed = setting
            break
    assert observed == compat.get("lock_timeout_setting")


def test_max_identifier_length(db: peewee.Database, compat: DatabaseCompat) -> None:
    limit = compat.get("max_identifier_length")
    probe = limit or 300  # no limit claimed: a 300-character name must survive intact
    at_limit = "a" * probe
    over = "b" * (probe + 1)
    db.execute_sql(f"CREATE TABLE {at_limit} (id INTEGER)")
    tables = db.get_tables()
    assert at_limit in tables
    created_over = _works(db, f"CREATE TABLE {over} (id INTEGER)")
    kept_whole = created_over and over in db.get_tables()
    if limit is None:
        assert kept_whole, "a 301-character name must be kept whole where no limit is claimed"
    else:
        # Over the limit: MySQL/MariaDB refuse the name, PostgreSQL truncates it to the limit.
        assert not kept_whole
        assert not created_over or "b" * limit in db.get_tables()


def test_max_index_key_bytes(db: peewee.Database, compat: DatabaseCompat) -> None:
    limit = compat.get("max_index_key_bytes")
    engine = db_type(db)
    if engine == "mysql":
        chars = limit // 4  # utf8mb4
        full_key = (
            "SELECT SUB_PART IS NULL FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
            "AND INDEX_NAME = %s"
        )
        db.execute_sql(f"CREATE TABLE ok_key (c VARCHAR({chars})) CHARACTER SET utf8mb4")
        db.execute_sql("CREATE INDEX ok_key_c ON ok_key (c)")
        assert _scalar_params(db, full_key, ("ok_key_c",)) == 1
        db.execute_sql(f"CREATE TABLE big_key (c VARCHAR({chars + 1})) CHARACTER SET utf8mb4")
        # One character more: MySQL refuses the index (1071), MariaDB shortens it to a prefix.
        if _works(db, "CREATE INDEX big_key_c ON big_key (c)"):
            assert _scalar_params(db, full_key, ("big_key_c",)) == 0
        return
    db.execute_sql("CREATE TABLE keys (c TEXT)")
    db.execute_sql("CREATE INDEX keys_c ON keys (c)")
    noise = "".join(uuid.uuid4().hex for _ in range(200))  # 6400 incompressible characters
    if limit is None:
        db.execute_sql("INSERT INTO keys (c) VALUES (%s)" if db.param == "%s"
                       else "INSERT INTO keys (c) VALUES (?)",
                       (noise * 10,))
        return
    insert = "INSERT INTO keys (c) VALUES (%s)"
    db.execute_sql(insert, (noise[: limit - 100],))
    with pytest.raises(peewee.DatabaseError, match=str(limit)):
        db.execute_sql(insert, (noise[: limit + 100],))


def test_native_json_type(db: peewee.Database, compat: DatabaseCompat) -> None:
    engine = db_type(db)
    if engine == "postgres":
        db.execute_sql("CREATE TABLE docs (j JSONB)")
        db.execute_sql("""INSERT INTO docs (j) VALUES ('{"b": 1,   "a": 2}')""")
        observed = _scalar(db, "SELECT j::text FROM docs") == '{"a": 2, "b": 1}'  # parsed, stored binary
    elif engine == "mysql":
        db.execute_sql("CREATE TABLE docs (j JSON)")
        observed = _scalar(
            db, "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                "AND TABLE_NAME = 'docs' AND COLUMN_NAME = 'j'"
        ).lower() == "json"  # MariaDB reports longtext: JSON is an alias there
    else:
        db.execute_sql("CREATE TABLE docs (j JSON)")
        db.execute_sql("""INSERT INTO docs (j) VALUES ('{"a": 1}')""")
        observed = _scalar(db, "SELECT typeof(j) FROM docs") not in ("text", "blob")
    assert observed == compat.get("native_json_type")


def test_json_functions(db: peewee.Database, compat: DatabaseCompat) -> None:
    probes = [
        """SELECT ('{"a": 1}'::jsonb ->> 'a')::integer""",
        """SELECT JSON_EXTRACT('{"a": 1}', '$.a')""",
        """SELECT json_extract('{"a": 1}', '$.a')""",
    ]
    observed = any(_works(db, sql) and int(_scalar(db, sql)) == 1 for sql in probes)
    assert observed == compat.get("json_functions")


def test_full_text_search(db: peewee.Database, compat: DatabaseCompat) -> None:
    engine = db_type(db)
    if engine == "postgres":
        observed = bool(_scalar(db, "SELECT to_tsvector('english', 'the quick brown foxes') "
                                    "@@ to_tsquery('english', 'fox')"))
    elif engine == "mysql":
        db.execute_sql(
            "CREATE TABLE texts (id INTEGER PRIMARY KEY, body TEXT, FULLTEXT INDEX ft_body (body))"
        )
        db.execute_sql("INSERT INTO texts VALUES (1, 'the quick brown fox'), (2, 'a lazy dog')")
        observed = (
            _scalar(db, "SELECT count(*) FROM texts WHERE MATCH(body) AGAINST('+quick' IN BOOLEAN MODE)") == 1
        )
    else:
        observed = _works(db, "CREATE VIRTUAL TABLE texts USING fts5(body)",
                          "INSERT INTO texts (body) VALUES ('the quick brown fox'), ('a lazy dog')")
        observed = observed and _scalar(db, "SELECT count(*) FROM texts WHERE texts MATCH 'quick'") == 1
    assert observed == compat.get("full_text_search")


def test_auto_increment(db: peewee.Database, compat: DatabaseCompat) -> None:
    observed = False
    for ddl in (
        # SQLite's spelling first: SQLite would take "INTEGER AUTO_INCREMENT" as a mere type name.
        "CREATE TABLE counter (id INTEGER PRIMARY KEY AUTOINCREMENT, v INTEGER)",
        "CREATE TABLE counter (id INTEGER AUTO_INCREMENT PRIMARY KEY, v INTEGER)",
    ):
        if _works(db, ddl):
            db.execute_sql("INSERT INTO counter (v) VALUES (10)")
            db.execute_sql("INSERT INTO counter (v) VALUES (20)")
            observed = (
                [r[0] for r in db.execute_sql("SELECT id FROM counter ORDER BY v").fetchall()] == [1, 2]
            )
            break
    assert observed == compat.get("auto_increment")


def test_sequence_support(db: peewee.Database, compat: DatabaseCompat) -> None:
    observed = False
    if _works(db, "CREATE SEQUENCE seq_probe"):
        for sql in ("SELECT nextval('seq_probe')", "SELECT NEXTVAL(seq_probe)"):
            if _works(db, sql):
                observed = int(_scalar(db, sql)) == 2  # the probe above took 1
                break
    assert observed == compat.get("sequence_support")


def test_type_casting(db: peewee.Database, compat: DatabaseCompat) -> None:
    assert _scalar(db, "SELECT CAST('42' AS DECIMAL(10, 0))") == 42  # every engine has CAST
    db.execute_sql("CREATE TABLE casts (c VARCHAR(10))")
    db.execute_sql("INSERT INTO casts (c) VALUES ('7')")
    full = _works(
        db, "SELECT '42'::integer", "ALTER TABLE casts ALTER COLUMN c TYPE INTEGER USING c::integer"
    )
    assert ("full" if full else "limited") == compat.get("type_casting")


def test_max_varchar(db: peewee.Database, compat: DatabaseCompat) -> None:
    limit = compat.get("max_varchar")
    if limit is None:
        db.execute_sql("CREATE TABLE vc (c VARCHAR(5))")
        db.execute_sql("INSERT INTO vc (c) VALUES ('%s')" % ("x" * 100))
        assert _scalar(db, "SELECT length(c) FROM vc") == 100  # the length is not enforced
        return
    assert _works(db, f"CREATE TABLE vc_ok (c VARCHAR({limit}))")
    assert not _works(db, f"CREATE TABLE vc_over (c VARCHAR({limit + 1}))")


def test_partial_indexes(db: peewee.Database, compat: DatabaseCompat) -> None:
    db.execute_sql("CREATE TABLE parts (c INTEGER)")
    observed = _works(db, "CREATE INDEX parts_positive ON parts (c) WHERE c > 0")
    assert observed == compat.get("partial_indexes")


def test_check_constraints(db: peewee.Database, compat: DatabaseCompat) -> None:
    db.execute_sql("CREATE TABLE checked (c INTEGER, CONSTRAINT c_positive CHECK (c > 0))")
    db.execute_sql("INSERT INTO checked (c) VALUES (1)")
    enforced = not _works(db, "INSERT INTO checked (c) VALUES (-1)")
    assert enforced == compat.get("check_constraints")


@pytest.mark.engines("sqlite", "postgres", "mysql", "pgvector")
def test_vector_type(db: peewee.Database, compat: DatabaseCompat) -> None:
    engine = db_type(db)
    if engine == "postgres":
        observed = _works(
            db, "CREATE EXTENSION IF NOT EXISTS vector", "CREATE TABLE emb (v vector(3))",
            "INSERT INTO emb (v) VALUES ('[1,2,3]')",
        ) and _scalar(db, "SELECT v <-> '[1,2,4]' FROM emb") == pytest.approx(1.0)
    elif engine == "mysql":
        observed = _works(db, "CREATE TABLE emb (v VECTOR(3))")
    else:
        observed = _works(db, "SELECT vec_distance_l2('[1,2,3]', '[1,2,4]')")
    assert observed == compat.get("vector_type")
