"""The splitter agrees with PostgreSQL: each piece runs, and the function body works."""

from __future__ import annotations

import pytest

from api.db.migrate.sqlfile import split_sql

SCRIPT = """
CREATE TABLE doc (id serial PRIMARY KEY, body text NOT NULL DEFAULT 'a;b');
CREATE FUNCTION add_mark() RETURNS trigger AS $fn$
BEGIN
  NEW.body := NEW.body || ';marked';  -- a semicolon inside the body
  RETURN NEW;
END;
$fn$ LANGUAGE plpgsql;
CREATE TRIGGER doc_mark BEFORE INSERT ON doc FOR EACH ROW EXECUTE FUNCTION add_mark();
INSERT INTO doc (body) VALUES ('it''s');
"""


@pytest.mark.engines("postgres")
def test_script_runs_statement_by_statement(db) -> None:
    statements = split_sql(SCRIPT)
    assert len(statements) == 4
    for statement in statements:
        db.execute_sql(statement)
    assert db.execute_sql("SELECT body FROM doc").fetchone()[0] == "it's;marked"
