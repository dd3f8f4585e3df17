"""Field compatibility checks and type translation, without a database."""

from __future__ import annotations

import logging

import peewee
import pytest
from playhouse.postgres_ext import BinaryJSONField

from api.db import ConfigurationError, DataBaseModel, validate_field_for_db
from api.db.schema.fields import get_equivalent_type, validate_models


class Article(DataBaseModel):
    slug = peewee.CharField(max_length=1024, index=True)
    body = peewee.TextField(index=True)
    title = peewee.CharField(max_length=768, unique=True)
    a_column_name_that_is_far_too_long_for_mysql_and_postgres_alike_x = peewee.IntegerField(null=True)
    meta = BinaryJSONField(null=True)

    class Meta:
        table_name = "article"


def _codes(warnings: list) -> set[tuple[str, str]]:
    return {(w.field, w.code) for w in warnings}


def test_mysql_and_mariadb_catch_long_keys_text_indexes_and_long_names() -> None:
    for flavour in ("mysql", "mariadb"):
        codes = _codes(Article.validate_fields(flavour))
        assert ("slug", "index_key_too_long") in codes
        assert ("body", "text_index_needs_prefix") in codes
        assert ("title", "index_key_too_long") not in codes  # 768 * 4 = 3072 bytes: exactly fits
        assert (
            "a_column_name_that_is_far_too_long_for_mysql_and_postgres_alike_x",
            "identifier_too_long",
        ) in codes
        assert ("meta", "type_not_native") in codes


def test_postgres_catches_long_names_but_not_its_own_types() -> None:
    codes = _codes(Article.validate_fields("postgres"))
    assert (
        "a_column_name_that_is_far_too_long_for_mysql_and_postgres_alike_x",
        "identifier_too_long",
    ) in codes
    assert ("meta", "type_not_native") not in codes
    assert ("body", "text_index_needs_prefix") not in codes
    assert ("slug", "index_key_too_long") not in codes  # 1024 ASCII bytes fit a 2704-byte B-tree entry


def test_sqlite_has_no_length_limits() -> None:
    codes = _codes(Article.validate_fields("sqlite"))
    assert codes == {("meta", "type_not_native")}


def test_messages_say_what_to_do(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="api.db.schema.fields")
    warnings = validate_models([Article], "mariadb")
    slug = next(w for w in warnings if w.field == "slug")
    assert (
        "4096 bytes" in slug.message and "3072-byte" in slug.message and "max_length <= 768" in slug.message
    )
    assert len([r for r in caplog.records if r.name == "api.db.schema.fields"]) == len(warnings)


def test_single_field_and_composite_index() -> None:
    assert validate_field_for_db(peewee.CharField(max_length=200, index=True), "mysql") == []
    long_varchar = validate_field_for_db(peewee.CharField(max_length=20000), "mysql")
    assert [w.code for w in long_varchar] == ["varchar_too_long"]

    class Pair(peewee.Model):
        first = peewee.CharField(max_length=500)
        second = peewee.CharField(max_length=500)

        class Meta:
            table_name = "pair"
            indexes = ((("first", "second"), True),)

    assert [w.code for w in validate_models([Pair], "mysql")] == ["index_key_too_long"]  # 4000 bytes together
    assert validate_models([Pair], "postgres") == []


def test_unbound_model_needs_a_db_type() -> None:
    class Loose(DataBaseModel):
        class Meta:
            database = None

    with pytest.raises(ConfigurationError, match="pass db_type="):
        Loose.validate_fields()


@pytest.mark.parametrize(
    ("field_type", "source", "target", "expected"),
    [
        ("JSONB", "postgres", "mysql", "JSON"),
        ("JSON", "mariadb", "postgres", "JSONB"),
        ("SERIAL", "postgres", "mysql", "INTEGER AUTO_INCREMENT"),
        ("INTEGER AUTO_INCREMENT", "mysql", "postgres", "SERIAL"),
        ("BOOLEAN", "postgres", "sqlite", "INTEGER"),
        ("TIMESTAMP", "postgres", "mysql", "DATETIME"),
        ("BYTEA", "postgres", "mysql", "BLOB"),
        ("varchar(255)", "mysql", "postgres", "VARCHAR(255)"),
        ("DECIMAL(10, 2)", "sqlite", "postgres", "NUMERIC(10,2)"),
        ("DOUBLE PRECISION", "postgres", "sqlite", "REAL"),
        ("VECTOR(3)", "postgres", "mysql", "VECTOR(3)"),
        ("UUID", "postgres", "mysql", "VARCHAR(40)"),
        (peewee.UUIDField, "postgres", "mysql", "VARCHAR(40)"),
        (peewee.DateTimeField(), "sqlite", "postgres", "TIMESTAMP"),
    ],
)
def test_get_equivalent_type(field_type: object, source: str, target: str, expected: str) -> None:
    assert get_equivalent_type(field_type, source, target) == expected


def test_get_equivalent_type_refuses_unknown_types() -> None:
    with pytest.raises(ConfigurationError, match="no known equivalent"):
        get_equivalent_type("GEOGRAPHY", "postgres", "mysql")
    with pytest.raises(ConfigurationError, match="unknown database type"):
        get_equivalent_type("TEXT", "oracle", "mysql")
