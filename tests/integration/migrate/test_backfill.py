"""m.backfill on real engines: batches in key ranges, resumable after SIGKILL, bounded for writers.

* a 1,000,000-row table backfilled while a second connection updates random rows: the writer's p99
  and the longest backfill statement are reported and held to 50 ms and 1 s (PostgreSQL, MariaDB);
* SIGKILL in the middle, then boot again: every row updated exactly once (``counter + 1``);
* string primary keys; no primary key is a typed error; an atomic declaration is refused; the
  preview warns and sends nothing.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from backfill_load import Writer, fill_counter_table
from peewee import SQL

from api.db import Migration, MigrationError, connect, migrate_db, preview_migration
from api.db.exceptions import MigrationDeclarationError, MissingPrimaryKey
from api.db.migrate.tracker import MigrationTracker

CHILD = str(Path(__file__).resolve().parents[1] / "backfill_child.py")
LATENCY_ROWS = 1_000_000

logger = logging.getLogger(__name__)


def scalar(db: Any, sql: str, *params: Any) -> Any:
    with db.connection_context():
        return db.execute_sql(sql, params).fetchone()[0]


@pytest.mark.engines("postgres", "mysql")
def test_backfill_keeps_a_concurrent_writer_fast(db: Any, db_url: str, engine_name: str) -> None:
    with db.connection_context():
        fill_counter_table(db, "big", LATENCY_ROWS)
    seen: dict[str, Any] = {}

    def bump(m: Any) -> None:
        seen["stats"] = m.backfill("big", "counter", SQL("counter + 1"))

    writer = Writer(db_url, "big", LATENCY_ROWS)
    writer.start()
    time.sleep(0.5)  # the writer's baseline
    try:
        migrate_db(db, [Migration("bump_big", bump, atomic=False)])
    finally:
        latency = writer.stop()
    stats = seen["stats"]
    logger.warning(
        "%s backfill of %d rows: %.0f rows/s, longest UPDATE %.0f ms, longest key search %.0f ms; writer "
        "n=%d p50 %.1f ms p99 %.1f ms max %.1f ms", engine_name, stats.rows, stats.rate,
        stats.longest_batch_ms,
        stats.longest_read_ms, latency["n"], latency["p50"], latency["p99"], latency["max"],
    )  # fmt: skip
    assert not writer.errors
    assert stats.rows == LATENCY_ROWS and stats.batches == LATENCY_ROWS // 10_000
    assert scalar(db, "SELECT COUNT(*) FROM big WHERE counter = 1") == LATENCY_ROWS
    assert latency["n"] > 100
    assert latency["p99"] < 50, latency
    assert stats.longest_batch_ms < 1000 and stats.longest_read_ms < 1000


@pytest.mark.engines("postgres", "mysql")  # SQLite: the lock is one transaction (see the docs)
def test_sigkill_mid_backfill_then_boot_updates_every_row_exactly_once(db: Any, db_url: str) -> None:
    rows = 20_000
    with db.connection_context():
        fill_counter_table(db, "item", rows)
    child = subprocess.Popen([sys.executable, CHILD, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while scalar(db, "SELECT COUNT(*) FROM item WHERE counter > 0") < rows // 4:
            assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
            assert time.monotonic() < deadline, "the child never got a quarter of the way"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    done = scalar(db, "SELECT COUNT(*) FROM item WHERE counter = 1")
    assert 0 < done < rows, "killed too late to prove anything"
    with db.connection_context():
        row = MigrationTracker(db).history_by_name()["bump_counter"]
    assert row.status == "running" and row.progress_key is not None
    assert int(row.progress_key) == done  # the batch and its progress committed together

    sys.path.insert(0, str(Path(CHILD).parent))
    from backfill_child import MIGRATIONS

    report = migrate_db(db, MIGRATIONS, lock_timeout=60)
    assert report.applied == ["bump_counter"]
    assert scalar(db, "SELECT COUNT(*) FROM item WHERE counter = 1") == rows
    assert scalar(db, "SELECT MAX(counter) FROM item") == 1
    with db.connection_context():
        row = MigrationTracker(db).history_by_name()["bump_counter"]
    assert row.status == "success" and row.progress_key is None


def test_string_primary_keys_resume_at_the_next_batch(db: Any) -> None:
    with db.connection_context():
        db.execute_sql(
            "CREATE TABLE tag (code VARCHAR(20) PRIMARY KEY, counter INTEGER NOT NULL, label VARCHAR(20))"
        )
        values = ", ".join(f"('k{i:05d}', 0, NULL)" for i in range(2_345))
        db.execute_sql(f"INSERT INTO tag (code, counter, label) VALUES {values}")
    calls = {"n": 0}

    def flaky(m: Any) -> None:
        calls["n"] += 1
        throttle = (lambda: 0.0) if calls["n"] > 1 else _fail_after(2)
        m.backfill("tag", "counter", SQL("counter + 1"), batch_size=500, throttle=throttle)
        m.backfill("tag", "label", "it's 100%", where=SQL("counter = 1"), batch_size=1_000)

    migration = Migration("bump_tags", flaky, atomic=False)
    with pytest.raises(MigrationError):
        migrate_db(db, [migration])
    assert scalar(db, "SELECT COUNT(*) FROM tag WHERE counter = 1") == 1_000
    with db.connection_context():
        assert MigrationTracker(db).history_by_name()["bump_tags"].progress_key == '"k00999"'
    migrate_db(db, [migration])
    assert scalar(db, "SELECT COUNT(*) FROM tag WHERE counter = 1") == 2_345
    assert scalar(db, f"SELECT COUNT(*) FROM tag WHERE label = {db.param}", "it's 100%") == 2_345


def _fail_after(batches: int) -> Any:
    seen = {"n": 0}

    def throttle() -> float:
        seen["n"] += 1
        if seen["n"] >= batches:
            raise RuntimeError("replica lag probe failed")
        return 0.0

    return throttle


def test_a_table_without_primary_key_is_a_typed_error(db: Any) -> None:
    with db.connection_context():
        db.execute_sql("CREATE TABLE loose (n INTEGER, v INTEGER)")
    with pytest.raises(MigrationError) as caught:
        migrate_db(db, [Migration("fill_loose", lambda m: m.backfill("loose", "v", 1), atomic=False)])
    assert isinstance(caught.value.orig, MissingPrimaryKey) and caught.value.category == "unsupported"
    assert "add one first" in str(caught.value)


def test_an_atomic_migration_refuses_backfill(db: Any) -> None:
    with db.connection_context():
        fill_counter_table(db, "item", 100)
    with pytest.raises(MigrationError) as caught:
        migrate_db(
            db, [Migration("bump_atomic", lambda m: m.backfill("item", "counter", SQL("counter + 1")))]
        )
    assert isinstance(caught.value.orig, MigrationDeclarationError)
    assert caught.value.category == "transaction_control"
    assert "atomic=False" in str(caught.value)
    assert scalar(db, "SELECT MAX(counter) FROM item") == 0


def test_preview_warns_and_sends_nothing(db: Any, db_url: str) -> None:
    with db.connection_context():
        fill_counter_table(db, "item", 2_500)
    migration = Migration("bump_preview", lambda m: m.backfill("item", "counter", SQL("counter + 1"),
                                                                batch_size=1_000), atomic=False)  # fmt: skip
    preview = preview_migration(db, [migration])
    warnings = [w for w in preview.warnings if w.code == "backfill"]
    assert (
        len(warnings) == 1 and "3 batch(es)" in warnings[0].message and "atomic=False" in warnings[0].message
    )
    assert any(s.startswith("UPDATE") for s in preview.sql_statements)
    assert scalar(db, "SELECT MAX(counter) FROM item") == 0


def test_direct_migrator_use_in_a_transaction_is_refused(db_url: str) -> None:
    database = connect(db_url)
    try:
        with database.connection_context():
            fill_counter_table(database, "item", 10)
        from api.db.migrate.migrator import Migrator, OperationFailed, make_schema_migrator

        m = Migrator(database, make_schema_migrator(database), migration="direct")
        with database.connection_context(), database.atomic():
            with pytest.raises(OperationFailed) as refused:
                m.backfill("item", "counter", SQL("counter + 1"))
            assert isinstance(refused.value.info.orig, MigrationDeclarationError)
        with database.connection_context():
            stats = m.backfill("item", "counter", SQL("counter + 1"), batch_size=3)
        assert stats is not None and stats.rows == 10 and stats.batches == 4
    finally:
        getattr(database, "close_all", database.close)()
