"""Many replicas booting at once, and a replica killed in the middle of a migration."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from boot_child import MIGRATIONS

from api.db import connect, migrate_db
from api.db.migrate.tracker import MigrationTracker

from engines import admin_cursor, get_engine

CHILD = str(Path(__file__).resolve().parents[1] / "boot_child.py")
NAMES = [m[0] if isinstance(m, tuple) else m.name for m in MIGRATIONS]


def _history(url: str) -> dict[str, str]:
    db = connect(url)
    try:
        with db.connection_context():
            return {r.migration_name: r.status for r in MigrationTracker(db).get_migration_history()}
    finally:
        getattr(db, "close_all", db.close)()


def _columns(url: str) -> set[str]:
    db = connect(url)
    try:
        with db.connection_context():
            return {c.name for c in db.get_columns("item")}
    finally:
        getattr(db, "close_all", db.close)()


def test_eight_processes_boot_at_once(db_url: str) -> None:
    env = {**os.environ, "APIDB_SLOW": "0"}
    children = [
        subprocess.Popen(
            [sys.executable, CHILD, db_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(8)
    ]
    reports = []
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    applied = [name for r in reports for name in r["applied"]]
    assert sorted(applied) == sorted(NAMES), "each migration applied by exactly one process"
    assert not any(r["failed"] or r["skipped"] for r in reports)
    assert _history(db_url) == {name: "success" for name in NAMES}
    assert {"size", "label", "kind"} <= _columns(db_url)


def test_process_killed_mid_migration_is_repaired_by_next_boot(
    db_url: str, engine_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "inside"
    child = subprocess.Popen(
        [sys.executable, CHILD, db_url, str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "APIDB_SLOW": "1"},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
        assert time.monotonic() < deadline, "the child never reached the slow migration"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(10)

    left = _history(db_url)
    if engine_name == "mysql":
        # No transactional DDL: the first migration committed, the second is left running
        # with its first operation done.
        assert left == {"create_item": "success", "add_size_and_label": "running"}
        assert "size" in _columns(db_url)
    else:
        # The whole run was one transaction: nothing of it remains.
        assert left == {}

    caplog.set_level(logging.INFO, logger="api.db")
    db = connect(db_url)
    try:
        report = migrate_db(db, MIGRATIONS, lock_timeout=60)
    finally:
        getattr(db, "close_all", db.close)()
    assert not report.failed
    assert _history(db_url) == {name: "success" for name in NAMES}
    assert {"size", "label", "kind"} <= _columns(db_url)
    if engine_name == "mysql":
        messages = [r.getMessage() for r in caplog.records]
        assert any("resuming migration add_size_and_label, left running" in m for m in messages)
        assert any("completed in an earlier run, not repeated" in m for m in messages)


@pytest.mark.engines("postgres")
def test_killed_during_a_long_statement_releases_the_lock_quickly(db_url: str, tmp_path: Path) -> None:
    """The server notices the dead client (client_connection_check_interval) before pg_sleep(60) ends."""
    marker = tmp_path / "inside"
    child = subprocess.Popen(
        [sys.executable, CHILD, db_url, str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "APIDB_SLOW": "sql"},
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
        assert time.monotonic() < deadline, "the child never reached the slow migration"
        time.sleep(0.05)
    time.sleep(0.3)  # let pg_sleep start
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    started = time.monotonic()
    db = connect(db_url)
    try:
        report = migrate_db(db, MIGRATIONS, lock_timeout=30)
    finally:
        db.close_all()
    waited = time.monotonic() - started
    assert report.applied == NAMES
    assert waited < 15, f"waited {waited:.1f} s for the dead client's lock (pg_sleep was 60 s)"
    with admin_cursor(get_engine("postgres"), db_url) as cur:
        cur.execute(  # this test's database only: other runs on the same server may sleep too
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'SELECT pg_sleep(60)%'"
        )
        assert cur.fetchone()[0] == 0
