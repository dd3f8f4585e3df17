"""PostgreSQL input syntax for array and hstore defaults, and JSON defaults of unbound fields."""

from __future__ import annotations

import peewee
from playhouse.postgres_ext import ArrayField, BinaryJSONField, HStoreField, JSONField

from api.db.engines.postgres import PostgresEngine, pg_array_text, pg_hstore_text


def test_array_text() -> None:
    assert pg_array_text([]) == "{}"
    assert pg_array_text(["a", 'b"c', "d\\e", None, True]) == '{"a","b\\"c","d\\\\e",NULL,t}'
    assert pg_array_text([[1, 2], [3, 4]]) == '{{"1","2"},{"3","4"}}'


def test_hstore_text() -> None:
    assert pg_hstore_text({}) == ""
    assert pg_hstore_text({"k": "v", "n": None}) == '"k"=>"v", "n"=>NULL'


def test_structured_defaults_of_unbound_fields() -> None:
    text = PostgresEngine.structured_default_text
    assert text(BinaryJSONField(default=dict, null=True), {}) == "{}"  # no 'json_type' needed
    assert text(JSONField(dumps=lambda v: "custom"), {"a": 1}) == "custom"
    assert text(ArrayField(peewee.CharField, default=list), []) == "{}"
    assert text(HStoreField(default=dict), {"a": "b"}) == '"a"=>"b"'
    assert text(peewee.CharField(default="x"), "x") is None
    assert text(BinaryJSONField(null=True), None) is None
