"""preview_migration on real servers: nothing changes, the SQL is what a run sends, warnings, estimates."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import peewee
import pytest
from peewee import BigIntegerField, CharField, IntegerField, TextField

from api.db import Migration, migrate_db
from api.db.cli import main
from api.db.engines import db_type
from api.db.exceptions import ConfigurationError, MigrationError
from api.db.migrate.alter import alter_db_add_column
from api.db.preview.capture import is_control, is_read, strip_statement_settings
from api.db.preview.preview import (
    BLOCKS_LARGE_TABLE,
    BREAKS_PREVIOUS_RELEASE,
    INCOMPLETE,
    MISSING_EXTENSION,
    NOT_ATOMIC,
    UNANALYSED,
    preview_migration,
)

from engines import Engine, admin_cursor

CREATE_ITEM = ("create_item", lambda m: m.sql("CREATE TABLE item (id INTEGER PRIMARY KEY, name VARCHAR(20))"))


class Tag(peewee.Model):
    label = CharField(max_length=30, index=True)

    class Meta:
        table_name = "tag"


ALL_ENGINES = ("sqlite", "postgres", "mysql", "pgvector", "pgvector_legacy")
VECTOR_MIGRATIONS = [
    ("vector", lambda m: m.sql("CREATE EXTENSION IF NOT EXISTS vector")),
    ("embedding", lambda m: m.sql("ALTER TABLE item ADD COLUMN embedding vector(3)")),
    ("hnsw", lambda m: m.sql("CREATE INDEX item_embedding ON item USING hnsw (embedding vector_l2_ops)")),
]


def styles(db: peewee.Database, engine: Engine) -> list[Any]:
    """Migrations written every way the engine accepts, none depending on an earlier one having run."""
    vector = VECTOR_MIGRATIONS if engine.name.startswith("pgvector") else []
    return [*base_styles(db), *vector]


def base_styles(db: peewee.Database) -> list[Any]:
    p = db.param
    return [
        CREATE_ITEM,
        ("create_tag", lambda m: m.create_tables(Tag)),
        ("add_columns", lambda m: (m.add_column("item", "size", IntegerField(null=True)),
                                   m.add_column("item", "kind", CharField(max_length=20, default="plain")))),
        ("helper", lambda m: alter_db_add_column(m, "item", "note", TextField(null=True))),
        ("sql_index", lambda m: m.sql("CREATE INDEX item_name ON item (name)")),
        ("raw_update", lambda m: m.db.execute_sql("UPDATE item SET name = 'renamed' WHERE id = 1")),
        ("raw_insert", lambda m: m.db.execute_sql(f"INSERT INTO item (id, name, kind) VALUES ({p}, {p}, {p})",
                                                  (2, "b", "x"))),
        ("zero_args", lambda: db.execute_sql("DELETE FROM item WHERE id = 3")),
        ("rename", lambda m: m.rename_column("item", "name", "title")),
        Migration("concurrent_index", lambda m: m.add_index("item", ("size",), concurrently=True),
                  atomic=False),
    ]


def snapshot(db: peewee.Database) -> dict[str, Any]:
    """Tables, columns, indexes and the tracker's rows: what a preview must leave as it found it."""
    state: dict[str, Any] = {}
    with db.connection_context():
        for table in sorted(db.get_tables()):
            columns = [(c.name, c.data_type, c.null) for c in db.get_columns(table)]
            indexes = sorted((i.name, tuple(i.columns), i.unique) for i in db.get_indexes(table))
            rows = None
            if table in ("migration_history", "migration_state", "item"):
                rows = sorted(
                    tuple(str(v) for v in r) for r in db.execute_sql(f"SELECT * FROM {table}").fetchall()
                )
            state[table] = (columns, indexes, rows)
        if db_type(db) == "postgres":
            state["extensions"] = sorted(
                db.execute_sql("SELECT extname, extversion FROM pg_extension").fetchall()
            )
    return state


def seed_item(db: peewee.Database) -> None:
    migrate_db(db, [CREATE_ITEM])
    db.execute_sql("INSERT INTO item (id, name) VALUES (1, 'a')")
    db.execute_sql("INSERT INTO item (id, name) VALUES (3, 'c')")


@pytest.mark.engines(*ALL_ENGINES)
def test_preview_changes_nothing_and_covers_only_pending(engine: Engine, db) -> None:
    empty = preview_migration(db, [CREATE_ITEM])
    assert empty.pending == ["create_item"] and empty.sql_statements
    with db.connection_context():
        assert db.get_tables() == []  # not even the history table

    seed_item(db)
    before = snapshot(db)
    preview = preview_migration(db, styles(db, engine))
    assert snapshot(db) == before
    assert preview.pending == [m[0] for m in styles(db, engine)][1:]  # a Migration is a tuple too, name first
    assert not [w for w in preview.warnings if w.code == MISSING_EXTENSION]  # the deploy creates it first
    assert {s.migration for s in preview.statements} == set(preview.pending)
    assert not [w for w in preview.warnings if w.code == INCOMPLETE]
    json.loads(json.dumps(preview.to_dict()))


def test_writes_through_db_cursor_are_captured_too(db) -> None:
    seed_item(db)
    before = snapshot(db)

    def raw_cursor(m: Any) -> None:
        cursor = m.db.cursor()
        cursor.execute("SELECT count(*) FROM item")
        assert cursor.fetchone()[0] == 2  # reads are real
        cursor.execute("DROP TABLE item")
        assert cursor.fetchone() is None and cursor.rowcount == 0

    preview = preview_migration(db, [CREATE_ITEM, ("raw_cursor", raw_cursor)])
    assert snapshot(db) == before  # on MySQL too, where a DROP TABLE that reached the server would commit
    assert preview.sql_statements == ["DROP TABLE item"]
    assert [w.code for w in preview.warnings] == [BREAKS_PREVIOUS_RELEASE]


@pytest.mark.engines("sqlite", "postgres", "pgvector")
def test_the_read_only_transaction_refuses_writes_that_bypass_the_capture(db) -> None:
    seed_item(db)
    before = snapshot(db)

    def bypass(m: Any) -> None:
        m.db.connection().cursor().execute("DROP TABLE item")  # the driver's own cursor: not captured

    preview = preview_migration(db, [CREATE_ITEM, ("bypass", bypass)])
    assert snapshot(db) == before
    incomplete = [w for w in preview.warnings if w.code == INCOMPLETE]
    assert [w.migration for w in incomplete] == ["bypass"]
    assert re.search(r"read-only transaction|readonly database", incomplete[0].message), incomplete[0].message
    assert preview.statements == []


def test_a_failed_non_transactional_migration_is_previewed_from_where_it_resumes(db) -> None:
    seed_item(db)
    two_steps = Migration("two_steps", lambda m: (m.add_column("item", "size", IntegerField(null=True)),
                                                  m.sql("ALTER TABLE other ADD COLUMN x INTEGER")),
                                                  atomic=False)
    with pytest.raises(MigrationError):
        # "other" does not exist yet: the first operation stays applied
        migrate_db(db, [CREATE_ITEM, two_steps])
    db.execute_sql("CREATE TABLE other (id INTEGER PRIMARY KEY)")
    preview = preview_migration(db, [CREATE_ITEM, two_steps])
    assert preview.pending == ["two_steps"] and preview.sql_statements == [
        "ALTER TABLE other ADD COLUMN x INTEGER"
    ]
    assert migrate_db(db, [CREATE_ITEM, two_steps]).applied == ["two_steps"]


def test_preview_refuses_a_callers_transaction(db) -> None:
    with db.connection_context(), db.atomic(), pytest.raises(ConfigurationError, match="outside db.atomic"):
        preview_migration(db, [CREATE_ITEM])


def _migration_writes(statements: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, tuple[Any, ...]]]:
    """What a real run sent for the migrations themselves: no bookkeeping, lock, read or control statement."""
    bookkeeping = re.compile(
        r"migration_history|migration_state|migration_lock|advisory|GET_LOCK|RELEASE_LOCK", re.IGNORECASE
    )
    return [
        (strip_statement_settings(sql), params)
        for sql, params in statements
        if not is_control(sql) and not is_read(sql) and not bookkeeping.search(sql)
    ]


@pytest.mark.engines(*ALL_ENGINES)
def test_captured_sql_equals_a_real_run(engine: Engine, db) -> None:
    seed_item(db)
    migrations = styles(db, engine)
    preview = preview_migration(db, migrations)
    captured = [(strip_statement_settings(s.sql), tuple(s.params)) for s in preview.statements]

    sent: list[tuple[str, tuple[Any, ...]]] = []
    thread = threading.get_ident()

    def hook(event: Any) -> None:
        if threading.get_ident() == thread and event.exception is None:
            sent.append((event.sql, tuple(event.params or ())))

    db.query_hooks.append(hook)
    try:
        report = migrate_db(db, migrations)
    finally:
        db.query_hooks.remove(hook)
    assert len(report.applied) == len(preview.pending)
    assert captured == _migration_writes(sent)
    assert len(captured) >= 10


@pytest.mark.engines("postgres")
def test_postgres_preview_takes_no_lock_stronger_than_access_share(db, db_url: str, engine: Engine) -> None:
    seed_item(db)
    seen: dict[str, set[tuple[str, str]]] = {}
    backend: list[int] = []
    started = threading.Event()

    def slow(m: Any) -> None:
        backend.append(m.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
        m.db.execute_sql("SELECT count(*) FROM item")  # a read: it may run, under ACCESS SHARE
        m.add_column("item", "size", IntegerField(null=True))
        m.sql("ALTER TABLE item ALTER COLUMN name TYPE TEXT")
        started.set()
        time.sleep(1.0)  # the poller looks at pg_locks meanwhile
        m.add_index("item", ("size",))

    def watch(label: str, done: threading.Event) -> None:
        started.wait(10)
        modes: set[tuple[str, str]] = set()
        with admin_cursor(engine, db_url) as cur:
            deadline = time.monotonic() + 10
            while not done.is_set() and time.monotonic() < deadline:
                cur.execute(
                    "SELECT coalesce(c.relname, l.relation::text), l.mode FROM pg_locks l "
                    "LEFT JOIN pg_class c ON c.oid = l.relation WHERE l.locktype = 'relation' AND l.pid = %s",
                    (backend[0],),
                )
                modes.update(cur.fetchall())
                time.sleep(0.05)
        seen[label] = modes

    for label, run in (("preview", lambda: preview_migration(db, [CREATE_ITEM, ("slow", slow)])),
                       ("real", lambda: migrate_db(db, [CREATE_ITEM, ("slow", slow)]))):
        started.clear()
        backend.clear()
        done = threading.Event()
        poller = threading.Thread(target=watch, args=(label, done))
        poller.start()
        try:
            run()
        finally:
            done.set()
            poller.join(15)
    assert ("item", "AccessShareLock") in seen["preview"]
    assert {mode for _, mode in seen["preview"]} == {"AccessShareLock"}
    # The same migration really run takes ACCESS EXCLUSIVE: the watch above can see it.
    assert ("item", "AccessExclusiveLock") in seen["real"]


@pytest.mark.engines("postgres", "pgvector")
def test_vector_column_warns_when_pgvector_is_missing(engine: Engine, db) -> None:
    seed_item(db)
    add_embedding = ("add_embedding", lambda m: m.sql("ALTER TABLE item ADD COLUMN embedding vector(3)"))
    warnings = [
        w for w in preview_migration(db, [CREATE_ITEM, add_embedding]).warnings if w.code == MISSING_EXTENSION
    ]
    if engine.name == "postgres":
        assert len(warnings) == 1 and "pgvector not installed" in warnings[0].message
        assert "does not offer the vector extension" in warnings[0].message
        return
    assert (
        len(warnings) == 1 and "CREATE EXTENSION vector (version 0.8.6 is available)" in warnings[0].message
    )
    created_first = ("vector", lambda m: m.sql("CREATE EXTENSION IF NOT EXISTS vector"))
    preview = preview_migration(db, [CREATE_ITEM, created_first, add_embedding])
    assert not [w for w in preview.warnings if w.code == MISSING_EXTENSION]
    db.execute_sql("CREATE EXTENSION vector")
    preview = preview_migration(db, [CREATE_ITEM, add_embedding])
    assert not [w for w in preview.warnings if w.code == MISSING_EXTENSION]


@pytest.mark.engines("mysql", "postgres")
def test_several_ddl_statements_on_mysql_warn(engine: Engine, db) -> None:
    seed_item(db)
    two = (
        "two",
        lambda m: (
            m.add_column("item", "a", IntegerField(null=True)),
            m.add_column("item", "b", IntegerField(null=True)),
        ),
    )
    one = ("one", lambda m: m.add_column("item", "c", IntegerField(null=True)))
    warnings = [w for w in preview_migration(db, [CREATE_ITEM, two, one]).warnings if w.code == NOT_ATOMIC]
    if engine.family == "mysql":
        assert [w.migration for w in warnings] == ["two"] and "cannot be atomic" in warnings[0].message
    else:
        assert warnings == []


def fill(db: peewee.Database, engine: str, table: str, rows: int) -> None:
    """Create ``table`` (id, name, num) with ``rows`` rows made by the server, and refresh its statistics."""
    db.execute_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(40), num INTEGER)")
    series = f"WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < {rows}) "
    if engine == "postgres":
        db.execute_sql(f"INSERT INTO {table} SELECT g, 'name ' || g, g FROM generate_series(1, {rows}) g")
        db.execute_sql(f"ANALYZE {table}")
    elif engine == "mysql":
        digits = "(" + " UNION ALL ".join(f"SELECT {d} AS d" for d in range(10)) + ")"
        number = " + ".join(f"{10**i} * t{i}.d" for i in range(5)) + " + 1"
        sources = ", ".join(f"{digits} t{i}" for i in range(5))  # recursion depth is capped on the server
        db.execute_sql(f"INSERT INTO {table} (id, name, num) SELECT n, CONCAT('name ', n), n FROM "
                       f"(SELECT {number} AS n FROM {sources}) s WHERE n <= {rows}")
        db.execute_sql(f"ANALYZE TABLE {table}").fetchall()
    else:
        db.execute_sql(f"INSERT INTO {table} (id, name, num) {series}SELECT n, 'name ' || n, n FROM seq")


def test_blocking_work_on_a_large_table_warns(engine: Engine, db) -> None:
    with db.connection_context():
        fill(db, engine.family, "big", 20_000)
    migrations = [
        ("index_name", lambda m: m.add_index("big", ("name",))),
        ("retype", lambda m: m.alter_column_type("big", "num", BigIntegerField(null=True))),
    ]
    warned = preview_migration(db, migrations, large_table_rows=10_000)
    by_migration = {w.migration for w in warned.warnings if w.code == BLOCKS_LARGE_TABLE}
    expected = {"mysql": {"retype"}, "postgres": {"index_name", "retype"}, "sqlite": {"index_name", "retype"}}
    assert by_migration == expected[engine.family], warned.warnings
    assert warned.requires_table_lock
    index = next(s for s in warned.statements if s.migration == "index_name")
    assert index.table == "big" and index.table_rows is not None and index.table_rows >= 15_000
    assert (
        index.lock
        == {"postgres": "SHARE", "mysql": "INPLACE", "sqlite": "database write lock"}[engine.family]
    )
    assert any(s.rewrites_table for s in warned.statements if s.migration == "retype")
    relaxed = preview_migration(db, migrations, large_table_rows=10**9, large_table_bytes=10**12)
    assert not [w for w in relaxed.warnings if w.code == BLOCKS_LARGE_TABLE]

    if engine.family == "postgres":
        concurrent = Migration(
            "index_name", lambda m: m.add_index("big", ("name",), concurrently=True), atomic=False
        )
        preview = preview_migration(db, [concurrent], large_table_rows=10_000)
        assert [s.lock for s in preview.statements] == ["SHARE UPDATE EXCLUSIVE"]
        assert not preview.warnings and not preview.requires_table_lock
        widen = ("widen", lambda m: m.alter_column_type("big", "name", CharField(max_length=80, null=True)))
        preview = preview_migration(db, [widen], large_table_rows=10_000)
        # binary-coercible
        assert [(s.kind, s.rewrites_table) for s in preview.statements] == [("metadata", False)]


def test_renames_and_drops_warn_about_the_previous_release(db) -> None:
    seed_item(db)
    migrations = [
        CREATE_ITEM,
        ("add_size", lambda m: m.add_column("item", "size", IntegerField(null=True))),
        ("rename", lambda m: m.rename_column("item", "name", "title")),
        ("scratch", lambda m: m.sql("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")),
        ("drop_scratch", lambda m: m.sql("DROP TABLE scratch")),
        ("drop_item", lambda m: m.sql("DROP TABLE item")),
    ]
    preview = preview_migration(db, migrations)
    breaking = {w.migration: w.message for w in preview.warnings if w.code == BREAKS_PREVIOUS_RELEASE}
    assert set(breaking) == {"rename", "drop_item"}  # a table made in the same deploy breaks nobody
    assert "previous release" in breaking["rename"] and "title" in breaking["rename"]


def test_a_step_depending_on_an_earlier_one_is_reported_not_raised(db) -> None:
    seed_item(db)
    migrations = [
        CREATE_ITEM,
        ("add_size", lambda m: m.add_column("item", "size", IntegerField(null=True))),
        ("needs_size", lambda m: m.db.execute_sql("SELECT size FROM item")),
        ("after", lambda m: m.add_column("item", "kind", CharField(max_length=10, null=True))),
    ]
    preview = preview_migration(db, migrations)
    incomplete = [w for w in preview.warnings if w.code == INCOMPLETE]
    assert [w.migration for w in incomplete] == ["needs_size"] and "cannot see" in incomplete[0].message
    assert [s.migration for s in preview.statements][-1] == "after"  # later migrations are still previewed


@pytest.mark.engines("postgres")
def test_statements_it_cannot_analyse_are_named(db) -> None:
    seed_item(db)
    block = ("anonymous_block", lambda m: m.sql("DO $$ BEGIN EXECUTE 'DROP TABLE item'; END $$"))
    preview = preview_migration(db, [CREATE_ITEM, block])
    assert [(s.kind, s.lock) for s in preview.statements] == [("other", "ACCESS EXCLUSIVE")]
    assert [w.code for w in preview.warnings] == [UNANALYSED] and "DO $$" in preview.warnings[0].message
    with db.connection_context():
        assert "item" in db.get_tables()


def test_estimates_grow_with_table_size(engine: Engine, db) -> None:
    with db.connection_context():
        fill(db, engine.family, "small", 100)
        fill(db, engine.family, "large", 50_000)

    def plan(table: str) -> Any:
        return preview_migration(db, [(f"index_{table}", lambda m: m.add_index(table, ("name",))),
                                      (f"retype_{table}", lambda m: m.alter_column_type(
                                          table, "num", BigIntegerField(null=True)))])

    small, large = plan("small"), plan("large")
    assert large.estimated_duration.high_seconds > small.estimated_duration.high_seconds
    assert large.estimated_duration.low_seconds > small.estimated_duration.low_seconds
    small_index, large_index = small.statements[0], large.statements[0]
    assert small_index.kind == large_index.kind == "index"
    assert large_index.estimate.high_seconds > small_index.estimate.high_seconds
    assert (large_index.table_bytes or 0) > (small_index.table_bytes or 0)
    assert "rows" in large.estimated_duration.basis and "MB/s" in large.estimated_duration.basis


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_plan_and_verify(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = ("--database", db_url, "--migrations", "boot_child:MIGRATIONS")
    code, out, _ = run_cli(capsys, *base, "plan")
    assert code == 0 and "4 pending migration(s)" in out
    header = out.splitlines()[1].split()
    assert header[:3] == ["migration", "table", "lock"]
    assert "add_size_and_label" in out and "CREATE INDEX" in out
    code, out, _ = run_cli(capsys, *base, "plan", "--json")
    data = json.loads(out)
    assert code == 0 and data["pending"][0] == "create_item" and data["statements"][0]["kind"] == "create"
    assert set(data) >= {"sql_statements", "requires_table_lock", "estimated_duration", "warnings"}

    code, out, err = run_cli(capsys, "--database", db_url, "verify", "--models", "preview_app:MODELS")
    assert code == 1 and "missing_table" in out  # nothing migrated yet

    assert run_cli(capsys, *base, "migrate")[0] == 0
    code, out, _ = run_cli(capsys, *base, "plan")
    assert code == 0 and "nothing pending" in out
    code, out, _ = run_cli(capsys, "--database", db_url, "verify", "--models", "preview_app:MODELS")
    assert code == 0 and "match the database" in out
    code, out, _ = run_cli(
        capsys, "--database", db_url, "verify", "--models", "preview_app:MODELS_AHEAD", "--json"
    )
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert [(d["kind"], d["column"]) for d in data["differences"]] == [("missing_column", "color")]


def test_cli_errors(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--database", db_url, "plan")
    assert code == 2 and "--migrations" in err
    code, _, err = run_cli(capsys, "--database", db_url, "verify", "--models", "preview_app:NOPE")
    assert code == 2 and "--models" in err and "no attribute NOPE" in err
    code, _, err = run_cli(capsys, "--database", db_url, "verify", "--models", "boot_child:MIGRATIONS")
    assert code == 2 and "not Peewee model classes" in err
