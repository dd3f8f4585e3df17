"""SQL normalization and the per-statement statistics of QueryMonitor (no database)."""

from __future__ import annotations

import pytest
from peewee import QueryEvent

from api.db.pool.querymon import WINDOW, QueryMonitor, normalize_sql


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("SELECT * FROM users WHERE email = 'alice@example.com'", "SELECT * FROM users WHERE email = ?"),
        ("SELECT * FROM t WHERE name = 'O''Brien' AND age > 42",
         "SELECT * FROM t WHERE name = ? AND age > ?"),
        ('SELECT "t1"."id" FROM "t1" WHERE "t1"."x" = %s LIMIT %s',
         'SELECT "t1"."id" FROM "t1" WHERE "t1"."x" = ? LIMIT ?'),
        ("SELECT 1 FROM t WHERE id IN (1, 2, 3, 4)", "SELECT ? FROM t WHERE id IN (...)"),
        ("INSERT INTO `t` (`a`, `b`) VALUES (%s, %s), (%s, %s)",
         "INSERT INTO `t` (`a`, `b`) VALUES (...), ..."),
        ("SELECT   x\n  FROM t2\tWHERE v = -3.5e2", "SELECT x FROM t2 WHERE v = ?"),
        ("SELECT pg_sleep(0.3), E'secret\\'s'", "SELECT pg_sleep(?), ?"),
        ("UPDATE t SET a = $1 WHERE b = :name", "UPDATE t SET a = ? WHERE b = ?"),
    ],
)
def test_normalize_replaces_literals_and_keeps_identifiers(sql: str, shape: str) -> None:
    assert normalize_sql(sql) == shape


def test_stats_per_shape_and_rolling_window() -> None:
    monitor = QueryMonitor(slow_query_ms=10_000)
    for i in range(WINDOW + 200):
        monitor(QueryEvent(f"SELECT * FROM t WHERE id = {i}", None, 0.001 if i < 200 else 0.002, None))
    monitor(QueryEvent("SELECT 'x' FROM u", None, 0.5, RuntimeError("boom")))
    by_sql = {s.sql: s for s in monitor.stats()}
    rows = by_sql["SELECT * FROM t WHERE id = ?"]
    assert rows.count == WINDOW + 200
    assert rows.window == WINDOW  # the first 200 samples (1 ms) have rolled out
    assert (
        rows.mean_ms == pytest.approx(2.0)
        and rows.p95_ms == pytest.approx(2.0)
        and rows.max_ms == pytest.approx(2.0)
    )
    failing = by_sql["SELECT ? FROM u"]
    assert (failing.count, failing.errors) == (1, 1)
    assert monitor.queries_total == WINDOW + 201 and monitor.errors_total == 1
    assert [s.sql for s in monitor.slowest(1)] == ["SELECT ? FROM u"]


def test_p95_is_the_nearest_rank() -> None:
    monitor = QueryMonitor()
    for ms in range(1, 101):
        monitor(QueryEvent("SELECT 1", None, ms / 1000, None))
    (stat,) = monitor.stats()
    assert stat.p95_ms == pytest.approx(95.0)
    assert stat.mean_ms == pytest.approx(50.5)
    assert stat.max_ms == pytest.approx(100.0)


@pytest.mark.parametrize(
    ("sql", "changes"),
    [
        ("SET search_path TO app", True),
        ("/* boot */ SET statement_timeout = 0", True),
        ("SELECT 1; SET @x := 1", True),
        ("SELECT pg_advisory_lock(42)", True),
        ("SELECT pg_try_advisory_lock(42)", True),
        ("SELECT GET_LOCK('m', 10)", True),
        ("CREATE TEMPORARY TABLE t (id int)", True),
        ("SELECT set_config('app.user', 'x', false)", True),
        ("SET LOCAL statement_timeout = 0", False),
        ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", False),
        ("UPDATE t SET a = 1 WHERE id = %s", False),
        ("SELECT pg_advisory_xact_lock(42)", False),
        ('SELECT "t1"."id" FROM "t1" WHERE "t1"."name" = %s', False),
    ],
)
def test_session_changing_statements_are_recognized(sql: str, changes: bool) -> None:
    from api.db.pool.pool import changes_session

    assert changes_session(sql) is changes
