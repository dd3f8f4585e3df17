"""Helpers of the backfill tests and bench: a big table filled server-side, and a writer measuring itself."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import peewee

from api.db import connect, server_info


def fill_counter_table(db: peewee.Database, table: str, rows: int) -> float:
    """``table(id, counter, note)`` with ``rows`` rows, ids 1..rows, filled server-side; seconds taken."""
    started = time.perf_counter()
    db.execute_sql(
        f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, counter INTEGER NOT NULL DEFAULT 0, note VARCHAR(20))"
    )
    flavour = server_info(db).flavour
    if flavour == "postgres":
        db.execute_sql(f"INSERT INTO {table} (id, counter) SELECT g, 0 FROM generate_series(1, {rows}) AS g")
        db.execute_sql(f"VACUUM ANALYZE {table}")
    elif flavour == "mariadb":
        db.execute_sql(f"INSERT INTO {table} (id, counter) SELECT seq, 0 FROM seq_1_to_{rows}")
    elif flavour == "mysql":
        db.execute_sql("SET SESSION cte_max_recursion_depth = %s", (rows + 1,))
        db.execute_sql(
            f"INSERT INTO {table} (id, counter) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM "
            f"s WHERE n < {rows}) SELECT n, 0 FROM s"
        )
    else:
        with db.atomic():
            db.execute_sql(
                f"INSERT INTO {table} (id, counter) WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                f"FROM s WHERE n < {rows}) SELECT n, 0 FROM s"
            )
    return time.perf_counter() - started


class Writer(threading.Thread):
    """Updates random rows of ``table`` in a loop on its own connection; records each UPDATE's latency."""

    def __init__(self, url: str, table: str, rows: int) -> None:
        super().__init__(name="backfill-test-writer", daemon=True)
        self.db = connect(url)
        self.table = table
        self.rows = rows
        self.latencies: list[float] = []  # seconds
        self.errors: list[BaseException] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        sql = f"UPDATE {self.table} SET note = {self.db.param} WHERE id = {self.db.param}"
        try:
            with self.db.connection_context():
                while not self.stopping.is_set():
                    began = time.perf_counter()
                    self.db.execute_sql(sql, ("w", random.randint(1, self.rows)))
                    self.latencies.append(time.perf_counter() - began)
                    time.sleep(0.002)
        except Exception as exc:  # reported by the test, which fails on it
            self.errors.append(exc)

    def stop(self) -> dict[str, Any]:
        """Stop, close, and answer n, p50, p99 and max in milliseconds."""
        self.stopping.set()
        self.join(30)
        close_all = getattr(self.db, "close_all", None)
        (close_all or self.db.close)()
        return summary(self.latencies)


def summary(latencies: list[float]) -> dict[str, Any]:
    """n, p50, p99, max (ms) of a list of seconds."""
    ordered = sorted(latencies)
    if not ordered:
        return {"n": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000

    return {"n": len(ordered), "p50": pct(0.50), "p99": pct(0.99), "max": ordered[-1] * 1000}
