from __future__ import annotations

from pathlib import Path

import pytest

from api.db.migrate.sqlfile import SQLFileError, read_sql_file, split_sql

FUNCTION = """
-- schema for documents; a comment with a ; inside
CREATE TABLE doc (id serial PRIMARY KEY, body text DEFAULT 'a;b', "odd;name" int);
/* block comment ; still a comment */
CREATE OR REPLACE FUNCTION touch() RETURNS trigger AS $body$
BEGIN
  NEW.body := NEW.body || ';';  -- semicolons inside the body
  RETURN NEW;
END;
$body$ LANGUAGE plpgsql;
DO $$ BEGIN PERFORM 1; END $$;
INSERT INTO doc (body) VALUES ('it''s; fine')
"""


def test_split_keeps_bodies_quotes_and_comments_intact() -> None:
    statements = split_sql(FUNCTION)
    assert len(statements) == 4
    assert statements[0].startswith("-- schema") and statements[0].endswith('"odd;name" int)')
    assert "RETURN NEW;\nEND;\n$body$ LANGUAGE plpgsql" in statements[1]
    assert statements[2] == "DO $$ BEGIN PERFORM 1; END $$"
    assert statements[3] == "INSERT INTO doc (body) VALUES ('it''s; fine')"


def test_comment_only_parts_and_empty_statements_are_dropped() -> None:
    assert split_sql("-- nothing\n;;  ;\n/* x */") == []
    assert split_sql("SELECT 1;;SELECT 2") == ["SELECT 1", "SELECT 2"]


def test_dollar_in_identifier_is_not_a_body() -> None:
    assert split_sql("SELECT a$1$b FROM t; SELECT 2") == ["SELECT a$1$b FROM t", "SELECT 2"]


def test_mysql_backslash_escape() -> None:
    assert split_sql(r"INSERT INTO t VALUES ('a\'; b'); SELECT 1") == [
        r"INSERT INTO t VALUES ('a\'; b')", "SELECT 1"
    ]


@pytest.mark.parametrize(
    "script", ["SELECT 'open", "CREATE FUNCTION f() AS $x$ body", "/* open", 'SELECT "x']
)
def test_unterminated_input_is_an_error(script: str) -> None:
    with pytest.raises(SQLFileError, match="unterminated"):
        split_sql(script)


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.sql"
    with pytest.raises(SQLFileError, match="nope.sql does not exist"):
        read_sql_file(missing)
    assert isinstance(SQLFileError("x"), ValueError)


def test_read_file(tmp_path: Path) -> None:
    path = tmp_path / "schema.sql"
    path.write_text(FUNCTION, encoding="utf-8")
    assert len(read_sql_file(path)) == 4
