"""Transaction logging at DEBUG and structured (JSON) records of a migration run, on real servers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from api.db import connect, migrate_db
from api.db.engines import engine_for
from api.db.exceptions import MigrationError
from api.db.logfields import JsonFormatter

from engines import Engine

ROOT = Path(__file__).resolve().parents[3]
TX_LOGGER = "api.db.migrate.transactions"
LEVELS = {"sqlite": "serializable", "postgres": "read committed", "mysql": "repeatable read"}


def _table(n: int) -> Any:
    def migration(m: Any) -> None:
        m.sql(f"CREATE TABLE logged_{n} (id INTEGER PRIMARY KEY)")

    return migration


def _close(database: Any) -> None:
    getattr(database, "close_all", database.close)()


def _tx(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TX_LOGGER and "event" in r.__dict__]


@pytest.mark.engines("sqlite", "postgres")  # transactional DDL: the runner opens transactions and savepoints
def test_begin_commit_and_savepoints_are_logged_with_isolation_and_duration(
    db_url: str, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    database: Any = connect(db_url, environ={})
    caplog.set_level(logging.DEBUG, logger="api.db")
    try:
        migrate_db(database, [("0001_a", _table(1)), ("0002_b", _table(2))])
    finally:
        _close(database)
    records = _tx(caplog)
    shape = [(r.__dict__["event"], r.__dict__["transaction"]) for r in records]
    assert shape[0] == ("begin", "transaction") and shape[-1] == ("commit", "transaction"), shape
    assert ("begin", "savepoint") not in shape, shape  # the fast way: no savepoint per migration or operation
    level = LEVELS[engine.family]
    for record in records:
        assert record.__dict__["isolation_level"] == level and record.__dict__["engine"] == engine.family
        if record.__dict__["event"] != "begin":
            assert isinstance(record.__dict__["duration_ms"], float) and record.__dict__["duration_ms"] >= 0
    assert records[0].__dict__["migrations"] == ["0001_a", "0002_b"]


@pytest.mark.engines("sqlite", "postgres")
def test_a_failure_logs_the_rollbacks(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    database: Any = connect(db_url, environ={})
    caplog.set_level(logging.DEBUG, logger="api.db")
    try:
        with pytest.raises(MigrationError):
            bad = lambda m: m.sql("SELECT * FROM nowhere")  # noqa: E731
            migrate_db(database, [("0001_a", _table(1)), ("0002_bad", bad)])
    finally:
        _close(database)
    shape = [(r.__dict__["event"], r.__dict__["transaction"]) for r in _tx(caplog)]
    assert ("rollback", "savepoint") in shape and shape[-1] == ("rollback", "transaction"), shape


@pytest.mark.engines("sqlite", "postgres")
def test_with_debug_off_the_isolation_level_is_not_asked(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database: Any = connect(db_url, environ={})
    statements: list[str] = []
    database.query_hooks.append(lambda event: statements.append(event.sql))
    caplog.set_level(logging.INFO, logger="api.db")
    try:
        migrate_db(database, [("0001_a", _table(1))])
    finally:
        _close(database)
    assert not _tx(caplog)
    assert not [s for s in statements if "isolation" in s.lower()], statements


def test_each_engine_reports_its_isolation_level(db: Any, engine: Engine) -> None:
    with db.connection_context(), db.atomic():
        assert engine_for(db).isolation_level() == LEVELS[engine.family]


def test_migration_records_carry_the_documented_fields_as_json(db_url: str, engine: Engine) -> None:
    database: Any = connect(db_url, environ={})
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(JsonFormatter())
    package = logging.getLogger("api.db")
    package.addHandler(handler)
    previous = package.level
    package.setLevel(logging.INFO)
    try:
        migrate_db(database, [("0001_json", _table(1))])
    finally:
        package.removeHandler(handler)
        package.setLevel(previous)
        _close(database)
    records = [json.loads(line) for line in lines]
    applied = [r for r in records if r.get("event") == "applied"]
    assert len(applied) == 1, records
    entry = applied[0]
    assert entry["migration"] == "0001_json" and entry["status"] == "success"
    assert entry["engine"] == engine.family
    assert entry["operations"] == 1 and isinstance(entry["duration_ms"], float)
    assert entry["logger"] == "api.db.migrate.runner" and entry["level"] == "INFO" and entry["time"]
    run = [r for r in records if r.get("event") == "run"]
    assert run and run[0]["migrations"] == ["0001_json"] and run[0]["status"] == "success"


@pytest.mark.engines("sqlite")
def test_cli_log_format_json_writes_one_object_per_line(db_url: str, tmp_path: Path) -> None:
    module = tmp_path / "cli_json_migrations.py"
    module.write_text(
        "MIGRATIONS = [('0001_cli', lambda m: m.sql('CREATE TABLE cli_json (id INTEGER PRIMARY KEY)'))]\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    command = [sys.executable, "-m", "api.db", "--database", db_url,
               "--migrations", "cli_json_migrations:MIGRATIONS", "--log-format", "json", "-v",
               "migrate"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert records, "logs were written"
    applied = [r for r in records if r.get("event") == "applied"]
    assert applied and applied[0]["migration"] == "0001_cli" and applied[0]["status"] == "success"
