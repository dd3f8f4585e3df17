"""Constant defaults rendered as SQL literals: quoting, booleans, dates, bytes, refusals."""

from __future__ import annotations

import datetime
import decimal
import uuid
from typing import Any

import pytest
from peewee import SQL

from api.db import ConfigurationError
from api.db.exceptions import UnrenderableDefault
from api.db.schema.literals import render_literal

CASES: list[tuple[Any, str, str, str]] = [
    # value, postgres, mysql, sqlite
    (None, "NULL", "NULL", "NULL"),
    (True, "TRUE", "1", "1"),
    (False, "FALSE", "0", "0"),
    (0, "0", "0", "0"),
    (-7, "-7", "-7", "-7"),
    (1.5, "1.5", "1.5", "1.5"),
    (decimal.Decimal("12.50"), "12.50", "12.50", "12.50"),
    (decimal.Decimal("1E+3"), "1000", "1000", "1000"),
    ("", "''", "''", "''"),
    ("it's", "'it''s'", "'it''s'", "'it''s'"),
    ("a\\b", "'a\\b'", "'a\\\\b'", "'a\\b'"),
    ("'; DROP TABLE x; --", "'''; DROP TABLE x; --'", "'''; DROP TABLE x; --'", "'''; DROP TABLE x; --'"),
    ("żółw ✓", "'żółw ✓'", "'żółw ✓'", "'żółw ✓'"),
    (datetime.date(2024, 2, 29), "'2024-02-29'", "'2024-02-29'", "'2024-02-29'"),
    (datetime.time(13, 5, 9), "'13:05:09'", "'13:05:09'", "'13:05:09'"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5), "'2024-01-02 03:04:05'", "'2024-01-02 03:04:05'",
     "'2024-01-02 03:04:05'"),
    (datetime.datetime(2024, 1, 2, 3, 4, 5, 120000), "'2024-01-02 03:04:05.120000'",
     "'2024-01-02 03:04:05.120000'", "'2024-01-02 03:04:05.120000'"),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), "'12345678-1234-5678-1234-567812345678'",
     "'12345678-1234-5678-1234-567812345678'", "'12345678-1234-5678-1234-567812345678'"),
    (b"\x00\xff", "'\\x00ff'::bytea", "X'00ff'", "X'00ff'"),
    ({"b": 1, "a": "x"}, """'{"a":"x","b":1}'""", """'{"a":"x","b":1}'""", """'{"a":"x","b":1}'"""),
    (SQL("CURRENT_DATE"), "CURRENT_DATE", "CURRENT_DATE", "CURRENT_DATE"),
]


@pytest.mark.parametrize(("value", "postgres", "mysql", "sqlite"), CASES)
def test_literals_per_engine(value: Any, postgres: str, mysql: str, sqlite: str) -> None:
    assert render_literal(value, "postgres") == postgres
    assert render_literal(value, "mysql") == mysql
    assert render_literal(value, "sqlite") == sqlite


def test_mysql_without_backslash_escapes_only_doubles_quotes() -> None:
    assert render_literal("a\\'b", "mysql", backslash_escapes=False) == "'a\\''b'"


def test_timezone_aware_datetime_only_on_postgres() -> None:
    aware = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert render_literal(aware, "postgres") == "'2024-01-02 03:04:05+00:00'"
    with pytest.raises(UnrenderableDefault, match="naive UTC"):
        render_literal(aware, "mysql")


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), decimal.Decimal("NaN"), "nul\x00", object(), {1, 2}]
)
def test_values_that_cannot_be_literals_are_refused(value: Any) -> None:
    with pytest.raises(UnrenderableDefault) as caught:
        render_literal(value, "postgres")
    assert isinstance(caught.value, ValueError)


def test_unknown_engine() -> None:
    with pytest.raises(ConfigurationError, match="unknown engine"):
        render_literal(1, "oracle")
