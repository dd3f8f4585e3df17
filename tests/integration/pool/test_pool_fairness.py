"""A fair pool: with more threads than connections every thread gets its turn, none times out."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest

from api.db import connect
from api.db.exceptions import PoolTimeout
from api.db.pool.diagnostics import PoolDiagnostics

from engines import Engine

THREADS = 6
SECONDS = float(os.environ.get("FAIRNESS_SECONDS", "6"))
QUERY_SECONDS = 0.01


def _work(database: Any, sql: str, stop: float, done: list[int], timeouts: list[int], index: int) -> None:
    while time.monotonic() < stop:
        try:
            with database.connection_context():
                database.execute_sql(sql).fetchone()
            done[index] += 1
        except PoolTimeout:
            timeouts[index] += 1


@pytest.mark.engines("postgres", "mysql")
def test_waiters_are_served_in_arrival_order(db_url: str, engine: Engine) -> None:
    database = connect(db_url, environ={}, max_connections=2, min_connections=0, acquire_timeout=1.0)
    sql = (
        f"SELECT pg_sleep({QUERY_SECONDS})"
        if engine.family == "postgres"
        else f"SELECT SLEEP({QUERY_SECONDS})"
    )
    done, timeouts = [0] * THREADS, [0] * THREADS
    stop = time.monotonic() + SECONDS
    workers = [
        threading.Thread(target=_work, args=(database, sql, stop, done, timeouts, i), name=f"fair-{i}")
        for i in range(THREADS)
    ]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(SECONDS + 10)
        stats = PoolDiagnostics(database).get_pool_stats()
    finally:
        database.close_all()
    print(f"\n{engine.name}: queries per thread {done}, timeouts {timeouts}, "
          f"acquire wait p95 {stats['acquire_wait_ms_p95']:.1f} ms, max "
          f"{stats.get('acquire_wait_ms_max', 0):.1f} ms")
    assert sum(timeouts) == 0, f"PoolTimeout per thread: {timeouts}"
    expected = SECONDS / QUERY_SECONDS * 2 / THREADS  # two connections shared six ways
    assert min(done) >= expected * 0.25, f"queries per thread {done}: a thread was starved"
    assert min(done) >= max(done) * 0.5, f"queries per thread {done}: not served in turn"
