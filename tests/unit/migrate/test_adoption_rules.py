"""The pure parts of adoption: type families and the object a raw statement names."""

from __future__ import annotations

import pytest

from api.db.error_handler import classify_error
from api.db.exceptions import SchemaConflict
from api.db.migrate.adoption import compatible_types, parse_sql_object, type_family


@pytest.mark.parametrize(
    ("sql_type", "family"),
    [
        ("character varying(9)", "text"),
        ("VARCHAR(255)", "text"),
        ("longtext", "text"),
        ("int unsigned", "integer"),
        ("timestamp without time zone", "time"),
        ("double precision", "decimal"),
        ("VARCHAR(255)[]", "array"),
        ("ARRAY", "array"),
        ("jsonb", "json"),
        ("USER-DEFINED", "user-defined"),
        ("hstore", "hstore"),
    ],
)
def test_type_family(sql_type: str, family: str) -> None:
    assert type_family(sql_type) == family


def test_compatible_types() -> None:
    assert compatible_types("VARCHAR(9)", "character varying")
    assert compatible_types("JSON", "longtext")  # MariaDB stores JSON as LONGTEXT
    assert compatible_types("HSTORE", "USER-DEFINED")
    assert not compatible_types("INTEGER", "character varying")
    assert not compatible_types("VARCHAR(9)", "USER-DEFINED")


@pytest.mark.parametrize(
    ("statement", "parsed"),
    [
        ("CREATE TABLE IF NOT EXISTS doc (id int)", ("table", ["doc"])),
        ('CREATE TABLE "public"."doc" (id int)', ("table", ['"public"."doc"'])),
        ("create unique index concurrently doc_t on doc (t)", ("index", ["doc_t", "doc"])),
        ("ALTER TABLE doc ADD COLUMN IF NOT EXISTS t text", ("column", ["doc", "t"])),
        ("ALTER TABLE `doc` ADD `t` text", ("column", ["`doc`", "`t`"])),
        ("-- note\nDROP TABLE IF EXISTS doc", ("drop_table", ["doc"])),
        ("DROP INDEX doc_t ON doc", ("drop_index", ["doc_t", "doc"])),
        ("ALTER TABLE doc DROP COLUMN t", ("drop_column", ["doc", "t"])),
        ("CREATE OR REPLACE VIEW v AS SELECT 1", ("view", ["v"])),
        ("CREATE TRIGGER tr BEFORE INSERT ON doc", ("trigger", ["tr"])),
        ("DROP FUNCTION IF EXISTS f", ("drop_function", ["f"])),
        ("DO $$ BEGIN CREATE TABLE doc (id int); END $$", None),
        ("INSERT INTO doc VALUES (1)", None),
    ],
)
def test_parse_sql_object(statement: str, parsed: tuple[str, list[str]] | None) -> None:
    assert parse_sql_object(statement) == parsed


def test_schema_conflict_carries_its_category() -> None:
    info = classify_error(SchemaConflict("index x taken", category="duplicate_index"), "postgres")
    assert info.category.value == "duplicate_index" and info.message == "index x taken"
