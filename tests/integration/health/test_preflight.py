"""Preflight on real servers: real versions and extensions, judged checks, JSON all the way."""

from __future__ import annotations

import json
import socket

import pytest

from api.db import connect, server_info
from api.db.health.preflight import Level, get_extended_diagnostics

from engines import Engine


def levels(report) -> dict[str, Level]:
    return {check.name: check.level for check in report.checks}


def test_report_has_real_facts_and_serializes(engine: Engine, db) -> None:
    report = get_extended_diagnostics(db)
    info = server_info(db)
    assert report.engine == engine.family and report.flavour == info.flavour
    assert report.server_version == info.version_string
    data = json.loads(json.dumps(report.to_dict()))
    assert data["checks"] and data["ok"] is report.ok
    assert levels(report)["connectivity"] is Level.PASS
    if engine.family == "postgres":
        assert report.server_max_connections and report.server_max_connections >= 10
        assert report.current_connections and report.current_connections >= 1
        assert set(report.timeouts) >= {"lock_timeout", "statement_timeout"}
        assert "plpgsql" in report.installed_extensions
        assert report.connection_pool_size == db._max_connections
    elif engine.family == "mysql":
        assert report.server_max_connections and report.current_connections
        assert "lock_wait_timeout" in report.timeouts
        assert report.settings["character_set_database"] == "utf8mb4"
        assert levels(report)["charset"] is Level.PASS
    else:
        assert "journal_mode" in report.settings


@pytest.mark.engines("postgres")
def test_pool_larger_than_server_limit_warns(db_url: str) -> None:
    database = connect(db_url, max_connections=100000)
    try:
        report = get_extended_diagnostics(database)
    finally:
        database.close_all()
    check = next(c for c in report.checks if c.name == "connection_headroom")
    assert check.level is Level.WARN and "POOL_MAX_CONNECTIONS" in check.detail


@pytest.mark.engines("postgres")
def test_inherited_statement_timeout_warns(db_url: str) -> None:
    database = connect(db_url, options="-c statement_timeout=5000")
    try:
        report = get_extended_diagnostics(database)
    finally:
        database.close_all()
    assert report.timeouts["statement_timeout"] == "5s"
    assert levels(report)["inherited_timeouts"] is Level.WARN


@pytest.mark.engines("pgvector", "pgvector_legacy", "postgres")
def test_pgvector_check_per_server(engine: Engine, db) -> None:
    if engine.name != "postgres":
        db.execute_sql("CREATE EXTENSION vector")
    report = get_extended_diagnostics(db, require_pgvector=True)
    pg = levels(report)["pgvector"]
    if engine.name == "pgvector":
        assert pg is Level.PASS and report.installed_extensions["vector"] == "0.8.6"
        assert report.ok
    elif engine.name == "pgvector_legacy":
        assert pg is Level.WARN and "fixed in 0.8.2" in next(
            c.detail for c in report.checks if c.name == "pgvector"
        )
    else:
        assert pg is Level.FAIL and not report.ok


def test_migration_state_is_judged(db) -> None:
    report = get_extended_diagnostics(
        db, migration_state=lambda _db: {"pending": ["a"], "failed": [], "running": []}
    )
    assert levels(report)["migrations"] is Level.WARN
    report = get_extended_diagnostics(
        db, migration_state=lambda _db: {"pending": [], "failed": ["b"], "running": []}
    )
    assert levels(report)["migrations"] is Level.FAIL and not report.ok


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_server_is_a_failed_check(scheme: str) -> None:
    database = connect(
        f"{scheme}://app:hunter2@127.0.0.1:{closed_port()}/app", connect_timeout=2, retry_max_attempts=1
    )
    report = get_extended_diagnostics(database)
    assert not report.ok
    check = report.checks[0]
    assert check.name == "connectivity" and check.level is Level.FAIL
    assert check.detail.startswith("connection_lost")
    assert "hunter2" not in json.dumps(report.to_dict())
