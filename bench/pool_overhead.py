"""Pool overhead: api.db's instrumented pool (diagnostics, hooks, tracing) against a plain playhouse.pool.

Each iteration checks a connection out, runs ``SELECT 1`` and an indexed
single-row read, and returns it. The variants run interleaved in rounds, in a
rotating order (so a noisy neighbour on a shared machine hurts them alike); the
table shows the best round of each, as ``timeit`` does, since interference only
ever adds time. Acquisition time is measured around ``db.connect()`` the same
way for every variant.

    python bench/pool_overhead.py [--iterations 1000] [--rounds 10] [--threads 1]
    BENCH_POSTGRES_URL / BENCH_MYSQL_URL override the servers (default: the local ones).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from playhouse.db_url import parse  # noqa: E402
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase  # noqa: E402

from api.db import connect  # noqa: E402
from api.db.pool.diagnostics import PoolDiagnostics, start_health_monitoring  # noqa: E402
from api.db.pool.events import PoolEvent, add_pool_listener, emit, trace_checkouts  # noqa: E402

SERVERS = {
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
POOL_SIZE = 8
ROWS = 1000


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _admin(engine: str, url: str, statement: str) -> None:
    kwargs = parse(url, unquote_password=True, unquote_user=True)
    kwargs.pop("database")
    if engine == "postgres":
        import psycopg2

        conn = psycopg2.connect(dbname="postgres", **kwargs)
        conn.autocommit = True
    else:
        import pymysql

        kwargs.setdefault("password", kwargs.pop("passwd", ""))
        conn = pymysql.connect(autocommit=True, **kwargs)
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
    finally:
        conn.close()


def _variants(engine: str, url: str) -> dict[str, Callable[[], Any]]:
    kwargs = parse(url, unquote_password=True, unquote_user=True)
    name = kwargs.pop("database")
    plain_class = PooledPostgresqlDatabase if engine == "postgres" else PooledMySQLDatabase

    def plain() -> Any:
        return plain_class(name, max_connections=POOL_SIZE, stale_timeout=3600, timeout=30, **kwargs)

    def off() -> Any:
        return connect(url, environ={}, min_connections=0, max_connections=POOL_SIZE, diagnostics=False)

    def on() -> Any:
        db = connect(
            url, environ={}, min_connections=0, max_connections=POOL_SIZE, diagnostics=True, leak_threshold=60
        )
        db.bench_monitor = start_health_monitoring(db, interval=1.0)
        return db

    def always() -> Any:
        return connect(
            url, environ={}, min_connections=0, max_connections=POOL_SIZE, diagnostics=True,
            leak_threshold=60,
            reset_session="always",
        )  # fmt: skip

    def listener() -> Any:
        db = off()
        add_pool_listener(db, _noop)
        return db

    def traced() -> Any:
        db = off()
        trace_checkouts(db)
        return db

    variants = {
        "playhouse.pool": plain,
        "api.db diagnostics off": off,
        "api.db diagnostics on": on,
        "api.db on, reset always": always,
        "api.db off + no-op listener": listener,
    }
    if _install_sdk_provider():
        variants["api.db off + checkout tracing"] = traced
    return variants


def _noop(event: PoolEvent) -> None:
    """A listener that does nothing: the cost of the hooks themselves."""


def _install_sdk_provider() -> bool:
    """api.db's spans to an OpenTelemetry SDK provider whose exporter drops them (False without the SDK)."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
    except ImportError:
        return False

    from api.db.tracing import set_tracer_provider

    class Drop(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))  # as applications export: in the background
    set_tracer_provider(provider)
    return True


def _loop(db: Any, iterations: int, acquire: list[float]) -> None:
    for i in range(iterations):
        started = time.perf_counter()
        db.connect()
        acquire.append(time.perf_counter() - started)
        try:
            db.execute_sql("SELECT 1").fetchone()
            db.execute_sql("SELECT name FROM bench_items WHERE id = %s", (i % ROWS + 1,)).fetchone()
        finally:
            db.close()


def _round(db: Any, iterations: int, threads: int) -> tuple[float, float, list[float]]:
    """Wall time, this process's CPU time (all threads) and the acquire times of one round."""
    acquire: list[float] = []
    workers = [
        threading.Thread(target=_loop, args=(db, iterations // threads, acquire)) for _ in range(threads)
    ]
    started, cpu_started = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started, time.process_time() - cpu_started, acquire


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def bench_engine(engine: str, base_url: str, iterations: int, rounds: int, threads: int) -> list[list[str]]:
    name = "apidb_bench_" + uuid.uuid4().hex[:8]
    quote = '"' if engine == "postgres" else "`"
    _admin(engine, base_url, f"CREATE DATABASE {quote}{name}{quote}")
    url = _with_database(base_url, name)
    try:
        setup = connect(url, environ={}, min_connections=0)
        setup.execute_sql("CREATE TABLE bench_items (id INTEGER PRIMARY KEY, name VARCHAR(40))")
        values = ", ".join(f"({i}, 'item {i}')" for i in range(1, ROWS + 1))
        setup.execute_sql(f"INSERT INTO bench_items (id, name) VALUES {values}")
        setup.close_all()
        databases = {label: factory() for label, factory in _variants(engine, url).items()}
        for db in databases.values():  # warm up: open the connections, fill caches
            _round(db, 200, threads)
        timings: dict[str, list[float]] = {label: [] for label in databases}
        cpu: dict[str, list[float]] = {label: [] for label in databases}
        waits: dict[str, list[float]] = {label: [] for label in databases}
        labels = list(databases)
        for number in range(rounds):
            shift = number % len(labels)
            for label in labels[shift:] + labels[:shift]:
                db = databases[label]
                elapsed, used, acquire = _round(db, iterations, threads)
                timings[label].append(elapsed)
                cpu[label].append(used)
                waits[label].extend(acquire)
        rows = []
        baseline = min(timings["playhouse.pool"])
        without = min(timings["api.db diagnostics off"])
        cpu_without = min(cpu["api.db diagnostics off"])
        for label, db in databases.items():
            best = min(timings[label])
            per_iteration = best / iterations * 1e6
            overhead = (best / baseline - 1) * 100
            cpu_best = min(cpu[label])
            on = label not in ("playhouse.pool", "api.db diagnostics off")
            rows.append([
                engine, label, f"{iterations / best:,.0f}", f"{per_iteration:.1f}",
                "-" if label == "playhouse.pool" else f"{overhead:+.1f}%",
                f"{(best / without - 1) * 100:+.1f}%" if on else "-",
                f"{cpu_best / iterations * 1e6:.1f}",
                f"{(cpu_best / cpu_without - 1) * 100:+.1f}%" if on else "-",
                f"{_percentile(waits[label], 50) * 1e6:.1f}", f"{_percentile(waits[label], 95) * 1e6:.1f}",
            ])  # fmt: skip
            if label.startswith("api.db"):
                stats = PoolDiagnostics(db).get_pool_stats()
                rows[-1].append(f"{stats['acquire_wait_ms_p95'] * 1e3:.1f}")
            else:
                rows[-1].append("-")
            monitor = getattr(db, "bench_monitor", None)
            if monitor is not None:
                monitor.close()
            db.close_all()
        return rows
    finally:
        _admin(engine, base_url, f"DROP DATABASE IF EXISTS {quote}{name}{quote}")


def component_costs(samples: int = 50_000) -> list[list[str]]:
    """CPU cost of each diagnostic piece in isolation, no server involved (microseconds per call)."""
    from peewee import QueryEvent

    from api.db.pool.pool import Checkout, changes_session
    from api.db.pool.querymon import QueryMonitor

    monitor = QueryMonitor()
    event = QueryEvent(
        'SELECT "t1"."name" FROM "bench_items" AS "t1" WHERE ("t1"."id" = %s)', (1,), 0.0002, None
    )

    def per_call(action: Callable[[], Any]) -> float:
        best = float("inf")
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(samples // 5):
                action()
            best = min(best, (time.perf_counter() - started) / (samples // 5))
        return best * 1e6

    conn = object()

    def at_depth(depth: int, capture: bool) -> float:  # an application's call stack is rarely shallow
        if depth:
            return at_depth(depth - 1, capture)
        return per_call(lambda: Checkout(conn, 0.0, sys._getframe(), capture))

    from peewee import SqliteDatabase

    from api.db.engines.state import state_of

    bare, heard = SqliteDatabase(":memory:"), SqliteDatabase(":memory:")
    state_of(bare)  # as connect() leaves it: a state, no listener
    add_pool_listener(heard, _noop)
    rows = [
        ["pool event, no listener (per event; 2 per checkout)",
         per_call(lambda: emit(bare, "checked_out", conn))],
        ["pool event, one no-op listener (per event)",
         per_call(lambda: emit(heard, "checked_out", conn, wait=0.0))],
        ["query hook (per statement)", per_call(lambda: monitor(event))],
        ["session-change check (per statement)", per_call(lambda: changes_session(event.sql))],
        ["checkout record, leak detection off (30 frames deep)", at_depth(30, False)],
        ["checkout record, leak detection on (30 frames deep)", at_depth(30, True)],
    ]
    if _install_sdk_provider():
        from api.db.tracing import completed_span

        span = lambda: completed_span("api_db.pool.checkout", bare, 0.0001, {"w": 0.1})  # noqa: E731
        rows.append(["checkout span, SDK provider (per checkout)", per_call(span)])
    return [[name, f"{cost:.2f}"] for name, cost in rows]


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip() for r in [headers, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=1000, help="checkouts per variant per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engines", default="postgres,mysql")
    args = parser.parse_args(argv)
    rows: list[list[str]] = []
    for engine in args.engines.split(","):
        rows.extend(bench_engine(engine, SERVERS[engine], args.iterations, args.rounds, args.threads))
    headers = ["engine", "variant", "checkouts/s", "us/checkout", "vs playhouse", "vs diag. off",
               "client CPU us",
               "CPU vs diag. off", "acquire p50 us", "acquire p95 us", "pool's own p95 us"]  # fmt: skip
    print(f"{args.iterations} checkouts x {args.rounds} rounds, {args.threads} thread(s), pool of "
          f"{POOL_SIZE}; each checkout: SELECT 1 + one indexed read; best round of each variant")  # fmt: skip
    print(_table(headers, rows))
    print()
    print(_table(["diagnostic piece (no server)", "CPU us per call"], component_costs()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
