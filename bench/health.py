"""Health probes: latency of /health/ready with a warm and a cold cache, and the cost of a /metrics scrape.

Every request is a real HTTP request to ``health_app`` on the threaded server of
``python -m api.db serve`` (127.0.0.1, one keep-alive-less connection each, as a
kubelet makes them), on a fresh database holding the example application's five
migrations, applied. Variants, side by side:

* ``live``: ``/health/live``, which checks nothing: the cost of the HTTP round trip itself;
* ``ready, warm cache``: ``cache_ttl=60``; the answer comes from the cache;
* ``ready, cold cache``: ``cache_ttl=0``; every request runs the whole check (SELECT 1,
  the migration state, the history, pgvector on PostgreSQL) on the kept probe connection;
* ``ready, cold start``: a new application per request: the check also opens its probe connection;
* ``hand-written SELECT 1``: the probe teams write by hand (a WSGI app that borrows a
  pooled connection and runs ``SELECT 1``), for comparison; it checks far less;
* ``metrics scrape``: ``/metrics`` with a warm cache (pool stats, histogram, exposition text).

    python bench/health.py [--requests 500] [--engines postgres,mysql]
    BENCH_POSTGRES_URL / BENCH_MYSQL_URL override the servers (default: the local ones).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api.db import connect, health_app, migrate_db  # noqa: E402
from api.db.health.wsgi import make_health_server  # noqa: E402
from bench.pool_overhead import _admin, _table, _with_database  # noqa: E402
from examples.app_migrations import MIGRATIONS  # noqa: E402

SERVERS = {
    "postgres": os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
    "mysql": os.environ.get("BENCH_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}


@contextmanager
def served(app: Any) -> Iterator[tuple[str, int]]:
    server = make_health_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def get(address: tuple[str, int], path: str) -> tuple[int, int]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, len(response.read())
    finally:
        conn.close()


def timed(action: Callable[[], Any], count: int) -> list[float]:
    action()  # warm-up (imports, first connection)
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1e3)
    return samples


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def hand_written_app(db: Any) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        try:
            with db.connection_context():
                db.execute_sql("SELECT 1").fetchone()
            status, body = "200 OK", {"status": "ok"}
        except Exception:  # noqa: BLE001 - the naive probe this row stands for
            status, body = "503 Service Unavailable", {"status": "down"}
        start_response(status, [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


def bench_engine(engine: str, base_url: str, requests: int) -> list[list[str]]:
    name = f"apidb_bench_health_{uuid.uuid4().hex[:8]}"
    _admin(
        engine, base_url, f'CREATE DATABASE "{name}"' if engine == "postgres" else f"CREATE DATABASE `{name}`"
    )
    url = _with_database(base_url, name)
    database = connect(url, environ={}, min_connections=0)
    rows: list[list[str]] = []
    try:
        migrate_db(database, MIGRATIONS)
        database.close()

        def row(variant: str, samples: list[float], note: str = "") -> None:
            rows.append([engine, variant, f"{percentile(samples, 50):.2f}", f"{percentile(samples, 99):.2f}",
                         f"{max(samples):.2f}", note])  # fmt: skip

        warm = health_app(database, MIGRATIONS, cache_ttl=60.0)
        with served(warm) as address:
            assert get(address, "/health/ready")[0] == 200
            row(
                "live (HTTP transport only)",
                timed(lambda: get(address, "/health/live"), requests),
                "no check at all",
            )
            row("ready, warm cache", timed(lambda: get(address, "/health/ready"), requests))
            size = get(address, "/metrics")[1]
            row(
                "metrics scrape (warm cache)",
                timed(lambda: get(address, "/metrics"), requests),
                f"{size} bytes",
            )
            checks = warm.checker.checks_total
        rows[-2][-1] = f"{checks} database check(s) in {requests + 2} requests"
        in_process = timed(warm.checker.check, requests)
        row("  check() alone, warm, no HTTP", in_process,
            f"p50 {percentile(in_process, 50) * 1e3:.1f} us, "
            f"p99 {percentile(in_process, 99) * 1e3:.1f} us")  # fmt: skip
        warm.close()

        cold = health_app(database, MIGRATIONS, cache_ttl=0.0)
        with served(cold) as address:
            row("ready, cold cache", timed(lambda: get(address, "/health/ready"), requests),
                "full check on the kept probe connection")  # fmt: skip
        direct = timed(lambda: cold.checker.check(max_age=0.0), requests)
        row(
            "  check() alone, no HTTP",
            direct,
            f"db part {cold.checker.last.check_duration_ms:.2f} ms" if cold.checker.last else "",
        )
        cold.close()

        def fresh_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
            app = health_app(database, MIGRATIONS, cache_ttl=0.0)
            try:
                return app(environ, start_response)
            finally:
                app.close()

        with served(fresh_app) as address:
            row("ready, cold start", timed(lambda: get(address, "/health/ready"), max(50, requests // 5)),
                "new probe connection per request")  # fmt: skip

        with served(hand_written_app(database)) as address:
            row("hand-written SELECT 1 (peer)", timed(lambda: get(address, "/health/ready"), requests),
                "pool checkout + SELECT 1 only")  # fmt: skip
    finally:
        database.close_all()
        _admin(
            engine,
            base_url,
            f'DROP DATABASE IF EXISTS "{name}"'
            if engine == "postgres"
            else f"DROP DATABASE IF EXISTS `{name}`",
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="requests per variant")
    parser.add_argument("--engines", default="postgres,mysql")
    args = parser.parse_args(argv)
    rows: list[list[str]] = []
    for engine in args.engines.split(","):
        rows += bench_engine(engine, SERVERS[engine], args.requests)
    print(_table(["engine", "variant", "p50 ms", "p99 ms", "max ms", "note"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
