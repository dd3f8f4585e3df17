"""m.backfill against one UPDATE of every row, while a writer updates random rows of the same table.

Usage:  .venv/bin/python bench/backfill.py [--rows 1000000] [--batch-size 10000]
                                           [--postgres-url URL] [--mysql-url URL] [--engines postgres,mysql]

For each engine a scratch database gets ``big(id, counter, note)`` with ``rows`` rows, filled
server-side. A second connection updates a random row's ``note`` in a loop (2 ms apart) and
times each UPDATE: first alone (the baseline), then during ``m.backfill("big", "counter",
SQL("counter + 1"))`` run by ``migrate_db``, then during one ``UPDATE big SET counter = counter + 1``.
Each variant runs once: the machine is shared. The scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "bench"))

import peewee  # noqa: E402
from add_column import DEFAULT_URLS, scratch_database  # noqa: E402
from backfill_load import Writer, fill_counter_table  # noqa: E402

from api.db import Migration, connect, migrate_db, server_info  # noqa: E402


def under_writer(url: str, rows: int, action: Callable[[], Any]) -> tuple[float, Any, dict[str, Any]]:
    """Run ``action`` while a writer updates random rows; (seconds, result, writer latency summary)."""
    writer = Writer(url, "big", rows)
    writer.start()
    time.sleep(0.3)
    writer.latencies.clear()
    started = time.perf_counter()
    try:
        result = action()
    finally:
        seconds = time.perf_counter() - started
        latency = writer.stop()
    if writer.errors:
        raise SystemExit(f"the writer failed: {writer.errors[0]!r}")
    return seconds, result, latency


def idle_writer(url: str, rows: int, seconds: float = 3.0) -> dict[str, Any]:
    return under_writer(url, rows, lambda: time.sleep(seconds))[2]


def run_engine(engine: str, url: str, rows: int, batch_size: int) -> dict[str, Any]:
    with scratch_database(engine, url) as scratch_url:
        db = connect(scratch_url)
        try:
            info = server_info(db)
            with db.connection_context():
                fill_counter_table(db, "big", rows)
            seen: dict[str, Any] = {}

            def bump(m: Any) -> None:
                seen["stats"] = m.backfill("big", "counter", peewee.SQL("counter + 1"), batch_size=batch_size)

            baseline = idle_writer(scratch_url, rows)
            migration = Migration("bench_backfill", bump, atomic=False)
            batched_s, _, batched = under_writer(scratch_url, rows, lambda: migrate_db(db, [migration]))

            def single() -> None:
                with db.connection_context():
                    db.execute_sql("UPDATE big SET counter = counter + 1")

            single_s, _, whole = under_writer(scratch_url, rows, single)
            with db.connection_context():
                twice = db.execute_sql("SELECT COUNT(*) FROM big WHERE counter = 2").fetchone()[0]
            if twice != rows:
                raise SystemExit(f"{engine}: {twice} of {rows} rows were updated once by each variant")
            stats = seen["stats"]
            return {
                "server": f"{info.flavour} {info.version_text}", "baseline": baseline, "batched": batched,
                "batched_s": batched_s, "rate": stats.rate, "longest": stats.longest_batch_ms,
                "single_s": single_s, "whole": whole,
            }  # fmt: skip
        finally:
            db.close_all()


def _ms(latency: dict[str, Any]) -> str:
    return f"{latency['p50']:.1f} / {latency['p99']:.1f} / {latency['max']:.0f} ms (n={latency['n']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--engines", default="postgres,mysql")
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgres"])
    parser.add_argument("--mysql-url", default=DEFAULT_URLS["mysql"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("api.db.migrate.backfill").setLevel(logging.INFO)  # the progress lines
    urls = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    results = {}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        print(f"[{engine}] {args.rows:,} rows ...", file=sys.stderr, flush=True)
        results[engine] = run_engine(engine, urls[engine], args.rows, args.batch_size)

    print(f"\nSET counter = counter + 1 on {args.rows:,} rows, a writer updating random rows meanwhile; "
          "writer latency p50 / p99 / max\n")  # fmt: skip
    print("| server | writer alone | m.backfill (batches of "
          f"{args.batch_size:,}) | rows/s | longest batch | writer during m.backfill | single UPDATE | "
          "rows/s | writer during the single UPDATE |")  # fmt: skip
    print("|" + "---|" * 9)
    for r in results.values():
        print(
            f"| {r['server']} | {_ms(r['baseline'])} | {r['batched_s']:.1f} s | {r['rate']:,.0f} "
            f"| {r['longest']:.0f} ms | {_ms(r['batched'])} | {r['single_s']:.1f} s "
            f"| {args.rows / r['single_s']:,.0f} | {_ms(r['whole'])} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
