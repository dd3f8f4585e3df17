"""Statement analysis and the read/write split of the preview capture: pure functions, no server."""

from __future__ import annotations

import pytest

from api.db.preview.analysis import (
    analyze_statement,
    estimate_duration,
    extension_types,
    pg_binary_coercible,
    pg_type_change,
    unquote,
)
from api.db.preview.capture import is_control, is_read, strip_statement_settings

PG = [
    ('ALTER TABLE "item" ADD COLUMN "size" INTEGER', "metadata", "ACCESS EXCLUSIVE", True, False),
    ("ALTER TABLE item ADD COLUMN token UUID DEFAULT gen_random_uuid()", "rewrite", "ACCESS EXCLUSIVE", True,
     True),
    ('ALTER TABLE "item" ALTER COLUMN "size" TYPE VARCHAR(10)', "rewrite", "ACCESS EXCLUSIVE", True, True),
    ('ALTER TABLE "item" ALTER COLUMN "size" SET NOT NULL', "scan", "ACCESS EXCLUSIVE", True, False),
    ('CREATE INDEX "item_kind" ON "item" ("kind")', "index", "SHARE", True, False),
    ('CREATE UNIQUE INDEX CONCURRENTLY "k" ON "public"."item" ("kind")', "index", "SHARE UPDATE EXCLUSIVE",
     False, False),
    ('ALTER TABLE "a" ADD CONSTRAINT "fk" FOREIGN KEY ("b_id") REFERENCES "b" ("id") NOT VALID', "metadata",
     "SHARE ROW EXCLUSIVE", True, False),
    ('ALTER TABLE "a" VALIDATE CONSTRAINT "fk"', "scan", "SHARE UPDATE EXCLUSIVE", False, False),
    ("UPDATE item SET name = 'x'", "data", "ROW EXCLUSIVE", False, False),
    ("CREATE TABLE IF NOT EXISTS tag (id SERIAL)", "create", "none (new table)", False, False),
]


@pytest.mark.parametrize("sql,kind,lock,blocks,rewrites", PG)
def test_postgres_lock_modes(sql: str, kind: str, lock: str, blocks: bool, rewrites: bool) -> None:
    effect = analyze_statement(sql, "postgres")
    assert (effect.kind, effect.lock, effect.blocks_writes, effect.rewrites_table) == (
        kind, lock, blocks, rewrites
    )


def test_postgres_tables_and_breaking_changes() -> None:
    assert analyze_statement('CREATE INDEX "i" ON "public"."item" ("kind")', "postgres").table == "item"
    rename = analyze_statement('ALTER TABLE "item" RENAME COLUMN "name" TO "title"', "postgres")
    assert (rename.breaking, rename.new_name, rename.table) == ("rename_column", "title", "item")
    assert analyze_statement('ALTER TABLE "item" DROP COLUMN "size"', "postgres").breaking == "drop_column"
    assert analyze_statement("DROP TABLE IF EXISTS item", "postgres").breaking == "drop_table"
    assert analyze_statement('ALTER TABLE "item" RENAME TO "things"', "postgres").new_name == "things"
    assert analyze_statement('ALTER TABLE "item" DROP CONSTRAINT "c"', "postgres").breaking is None


@pytest.mark.parametrize(
    "sql,flavour,version,lock,rewrites",
    [
        ("ALTER TABLE `item` ADD COLUMN `size` INTEGER", "mariadb", (10, 11, 6), "INSTANT", False),
        ("ALTER TABLE `item` ADD COLUMN `size` INTEGER", "mysql", (5, 7, 44), "INPLACE", True),
        ("ALTER TABLE `item` MODIFY `size` VARCHAR(10)", "mysql", (8, 0, 36), "COPY", True),
        ("CREATE INDEX `i` ON `item` (`kind`) ALGORITHM=INPLACE LOCK=NONE", "mariadb", (10, 11), "INPLACE",
         False),
        ("ALTER TABLE `item` DROP COLUMN `size`", "mysql", (8, 0, 28), "INPLACE", True),
        ("ALTER TABLE `item` DROP COLUMN `size`", "mysql", (8, 0, 29), "INSTANT", False),
        ("ALTER TABLE `a` ADD CONSTRAINT `fk` FOREIGN KEY (`b`) REFERENCES `b` (`id`)", "mysql", (8, 0),
         "COPY", True),
    ],
)
def test_mysql_algorithms(
    sql: str, flavour: str, version: tuple[int, ...], lock: str, rewrites: bool
) -> None:
    effect = analyze_statement(f"SET STATEMENT lock_wait_timeout=5 FOR {sql}", "mysql", flavour=flavour,
                               version=version)
    assert (effect.lock, effect.rewrites_table, effect.blocks_writes) == (lock, rewrites, lock == "COPY")
    assert effect.table in ("item", "a")


def test_sqlite_every_write_takes_the_database_lock() -> None:
    copy = analyze_statement('INSERT INTO "t__tmp__" ("a") SELECT "a" FROM "t"', "sqlite")
    assert (copy.kind, copy.table, copy.rewrites_table, copy.lock) == (
        "rewrite", "t", True, "database write lock"
    )
    assert analyze_statement('ALTER TABLE "t" DROP COLUMN "a"', "sqlite").rewrites_table


def test_reads_pass_and_writes_are_captured() -> None:
    for sql in ("SELECT 1", "  -- c\nSHOW INDEX FROM `t`", 'PRAGMA "main".table_info("t")',
                "EXPLAIN SELECT 1",
                "WITH x AS (SELECT 1) SELECT * FROM x", "SELECT current_setting('lock_timeout')"):
        assert is_read(sql), sql
    for sql in ("SELECT * FROM t FOR UPDATE", "PRAGMA foreign_keys = ON",
                "WITH d AS (DELETE FROM t) SELECT 1",
                "SELECT nextval('s')", "EXPLAIN ANALYZE DELETE FROM t", "CREATE TABLE t (a int)",
                "SELECT a INTO b FROM t", "SET STATEMENT max_statement_time=1 FOR DROP TABLE t"):
        assert not is_read(sql), sql
    for sql in ('SAVEPOINT "s1";', "SET LOCAL lock_timeout = %s", "PRAGMA busy_timeout = 5000",
                "SET SESSION lock_wait_timeout = %s, innodb_lock_wait_timeout = %s",
                "ROLLBACK TO SAVEPOINT x"):
        assert is_control(sql), sql
    # these would end the preview's transaction
    assert not is_control("COMMIT") and not is_control("ROLLBACK")
    assert (
        strip_statement_settings("SET STATEMENT lock_wait_timeout=5, x=1 FOR ALTER TABLE t")
        == "ALTER TABLE t"
    )


def test_extension_types_and_names() -> None:
    assert extension_types("ALTER TABLE item ADD COLUMN embedding vector(3)") == ["vector"]
    assert extension_types('CREATE TABLE d (e halfvec(3072) NOT NULL, t hstore)') == ["halfvec", "hstore"]
    assert extension_types("SELECT vector(3)") == []
    assert extension_types("ALTER TABLE item ADD COLUMN vector_count INTEGER") == []
    assert unquote('"public"."It""em"') == 'It"em' and unquote("`db`.`t`") == "t"


def test_estimates_grow_with_size_and_say_why() -> None:
    small, large = estimate_duration("index", 1000, 10**6), estimate_duration("index", 10**6, 10**9)
    assert large.low_seconds > small.low_seconds and large.high_seconds > small.high_seconds
    assert "MB/s" in large.basis and "1000000 rows" in large.basis
    metadata = estimate_duration("metadata", 10**9, 10**12)
    assert metadata.high_seconds < 1 and "independent of the table size" in metadata.basis
    assert estimate_duration("index", 500, None).basis.endswith("MB/s") and "guessed" in estimate_duration(
        "index", 500, None).basis


def test_postgres_type_changes_that_need_no_rewrite() -> None:
    assert pg_type_change('ALTER TABLE "t" ALTER COLUMN "name" TYPE VARCHAR(200)') == (
        "name", "varchar", 200, False
    )
    assert pg_type_change('ALTER TABLE "t" ALTER COLUMN "n" TYPE INTEGER USING "n"::INTEGER') == (
        "n", "integer", None, True)
    assert pg_binary_coercible("character varying", 40, "varchar", 200)
    assert pg_binary_coercible("character varying", 40, "text", None)
    assert not pg_binary_coercible("character varying", 200, "varchar", 40)
    assert not pg_binary_coercible("integer", None, "bigint", None)
    assert not pg_binary_coercible("text", None, "varchar", 10)
