"""The URL's own password never reaches a MigrationError, a log record, migration_history or the CLI."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from api.db import connect, migrate_db
from api.db.cli import main
from api.db.exceptions import MigrationError
from api.db.migrate.tracker import MigrationTracker
from api.db.redact import register_secret

from engines import Engine

SECRET = "Zq-s3cret pw"  # a space and a dash: URL-encoded in the URL, quoted in the SQL


def _with_password(url: str, engine: Engine) -> str:
    if engine.family != "postgres":  # the local servers trust connections: only PostgreSQL ignores a password
        register_secret(SECRET)
        return url
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, f"{user.split(':')[0]}:Zq-s3cret%20pw@{host}", parts.path, "", ""))


@pytest.mark.engines("sqlite", "postgres")
def test_password_in_a_failing_statement_is_masked_everywhere(
    db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _with_password(db_url, engine)
    database: Any = connect(url, environ={})
    broken = [("needs_secret", lambda m: m.sql(f"SELECT nope FROM missing WHERE note = '{SECRET}'"))]
    try:
        with caplog.at_level(logging.DEBUG, logger="api.db"), pytest.raises(MigrationError) as caught:
            migrate_db(database, broken)
        with database.connection_context():
            history = MigrationTracker(database).get_migration_history()
    finally:
        getattr(database, "close_all", database.close)()
    assert SECRET not in str(caught.value) and "***" in str(caught.value)
    assert SECRET not in caplog.text and "Zq-s3cret%20pw" not in caplog.text
    assert history and history[0].error_message and SECRET not in history[0].error_message
    assert main(["--database", url, "history", "--json"]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err and "needs_secret" in out.out
