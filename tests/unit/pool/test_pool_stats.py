"""Stats arithmetic and the constant key set of PoolDiagnostics, without a server."""

from __future__ import annotations

import logging

import pytest

from api.db import connect
from api.db.pool.diagnostics import POOL_STAT_KEYS, PoolDiagnostics, log_connection_config
from api.db.pool.pool import PoolCounters


def test_wait_percentiles_over_the_last_thousand() -> None:
    counters = PoolCounters()
    for _ in range(500):
        counters.acquired(10.0)  # rolled out below
    for ms in range(1, 1001):
        counters.acquired(ms / 1000)
    p50, p95, worst = counters.wait_percentiles_ms()
    assert (p50, p95, worst) == (pytest.approx(500.0), pytest.approx(950.0), pytest.approx(1000.0))
    assert counters.acquisitions == 1500


def test_empty_counters_report_zero() -> None:
    assert PoolCounters().wait_percentiles_ms() == (0.0, 0.0, 0.0)


def test_sqlite_has_every_key_and_no_pool(tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    database = connect(f"sqlite:///{tmp_path}/stats.db", environ={})
    database.execute_sql("SELECT 1")
    stats = PoolDiagnostics(database).get_pool_stats()
    assert tuple(stats) == POOL_STAT_KEYS
    assert stats["max"] == 0 and stats["utilization_percent"] == 0.0
    assert stats["queries_total"] == 1
    caplog.set_level(logging.INFO, logger="api.db")
    assert PoolDiagnostics(database).log_pool_health() == logging.INFO
    database.close()


def test_connection_config_log_masks_the_password(caplog: pytest.LogCaptureFixture) -> None:
    database = connect("postgresql://app:s3cr3t-pw@db.internal/shop", environ={"APP_NAME": "shop"})
    caplog.set_level(logging.INFO, logger="api.db")
    effective = log_connection_config(database)
    assert "s3cr3t-pw" not in caplog.text and "s3cr3t-pw" not in repr(effective)
    assert effective["driver_options"]["password"] == "***"
    assert effective["pool"]["app_name"] == "shop"


def test_acquire_wait_histogram_is_cumulative_and_bounds_are_inclusive() -> None:
    from api.db.pool.pool import WAIT_BUCKETS

    counters = PoolCounters()
    for wait in (0.0, 0.001, 0.0011, 0.3, 99.0):
        counters.acquired(wait)
    buckets, total_wait, count = counters.wait_histogram()
    assert [bound for bound, _ in buckets] == [*WAIT_BUCKETS, float("inf")]
    by_bound = dict(buckets)
    assert by_bound[0.0001] == 1  # the zero wait
    assert by_bound[0.001] == 2  # a wait equal to a bound counts in that bucket
    assert by_bound[0.0025] == 3
    assert by_bound[0.25] == 3 and by_bound[0.5] == 4
    assert by_bound[30.0] == 4 and by_bound[float("inf")] == 5 == count
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)
    assert total_wait == pytest.approx(0.0 + 0.001 + 0.0011 + 0.3 + 99.0)


def test_empty_histogram() -> None:
    buckets, total_wait, count = PoolCounters().wait_histogram()
    assert all(n == 0 for _, n in buckets) and total_wait == 0.0 and count == 0
