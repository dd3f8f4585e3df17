"""add_column NOT NULL with a default: api.db's native statement against playhouse.migrate's three steps.

Usage:  .venv/bin/python bench/add_column.py [--rows 1000000] [--small 100000]
                                             [--postgres-url URL] [--mysql-url URL] [--engines postgres,mysql]

For each engine a scratch database gets two tables filled server-side (``generate_series``
on PostgreSQL, the ``seq_1_to_N`` sequence engine on MariaDB, a recursive CTE on MySQL):
``rows`` rows and ``small`` rows. On each, api.db's ``add_column`` runs first (it leaves
the rows untouched), then playhouse.migrate's on the big table. Each variant runs once:
the machine is shared. The scratch databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import peewee  # noqa: E402
from playhouse.migrate import SchemaMigrator  # noqa: E402

from api.db import connect, server_info  # noqa: E402
from api.db.schema.ddl import safe_schema_migrator  # noqa: E402

DEFAULT_URLS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432/test",
    "mysql": "mysql://root@127.0.0.1:3306/test",
}


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@contextmanager
def scratch_database(engine: str, base_url: str) -> Iterator[str]:
    name = f"apidb_bench_{uuid.uuid4().hex[:10]}"
    admin = connect(base_url)
    quoted = f'"{name}"' if engine == "postgres" else f"`{name}`"
    admin.execute_sql(f"CREATE DATABASE {quoted}")
    try:
        yield _with_database(base_url, name)
    finally:
        admin.execute_sql(
            f"DROP DATABASE IF EXISTS {quoted}" + (" WITH (FORCE)" if engine == "postgres" else "")
        )
        admin.close_all()


def fill(db: peewee.Database, engine: str, flavour: str, table: str, rows: int) -> float:
    started = time.perf_counter()
    db.execute_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    if engine == "postgres":
        db.execute_sql(f"INSERT INTO {table} SELECT g, g %% 1000 FROM generate_series(1, {rows}) AS g")
        db.execute_sql(f"VACUUM ANALYZE {table}")
    elif flavour == "mariadb":
        db.execute_sql(f"INSERT INTO {table} SELECT seq, seq %% 1000 FROM seq_1_to_{rows}")
    else:
        db.execute_sql("SET SESSION cte_max_recursion_depth = %s", (rows + 1,))
        db.execute_sql(
            f"INSERT INTO {table} "
            f"WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {rows}) "
            "SELECT n, n %% 1000 FROM s"
        )
    return time.perf_counter() - started


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def new_field() -> peewee.Field:
    return peewee.CharField(max_length=32, null=False, default="pending")


def run_engine(engine: str, url: str, rows: int, small: int) -> dict[str, Any]:
    with scratch_database(engine, url) as scratch_url:
        db = connect(scratch_url)
        try:
            info = server_info(db)
            fill_big = fill(db, engine, info.flavour, "big", rows)
            fill(db, engine, info.flavour, "small", small)
            ours = safe_schema_migrator(db)
            theirs = SchemaMigrator.from_database(db)
            ours_small = timed(lambda: ours.migrate(ours.add_column("small", "status_ours", new_field())))
            ours_big = timed(lambda: ours.migrate(ours.add_column("big", "status_ours", new_field())))
            theirs_big = timed(
                lambda: theirs.migrate(theirs.add_column("big", "status_playhouse", new_field()))
            )
            same = db.execute_sql(
                "SELECT count(*) FROM big WHERE status_ours = 'pending' AND status_playhouse = 'pending'"
            ).fetchone()[0]
            if same != rows:
                raise SystemExit(f"{engine}: only {same} of {rows} rows carry both defaults")
            return {
                "server": f"{info.flavour} {info.version_text}",
                "fill": fill_big,
                "ours_small": ours_small,
                "ours_big": ours_big,
                "theirs_big": theirs_big,
            }
        finally:
            db.close_all()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--engines", default="postgres,mysql")
    parser.add_argument("--postgres-url", default=DEFAULT_URLS["postgres"])
    parser.add_argument("--mysql-url", default=DEFAULT_URLS["mysql"])
    args = parser.parse_args(argv)
    urls = {"postgres": args.postgres_url, "mysql": args.mysql_url}
    results = {}
    for engine in [e.strip() for e in args.engines.split(",") if e.strip()]:
        print(
            f"[{engine}] filling {args.rows:,} + {args.small:,} rows server-side ...",
            file=sys.stderr,
            flush=True,
        )
        results[engine] = run_engine(engine, urls[engine], args.rows, args.small)

    print(f"\nadd_column(CharField(null=False, default='pending')) on a table of {args.rows:,} rows, "
          "one run each\n")
    header = (f"| server | playhouse.migrate, {args.rows:,} rows | api.db, {args.rows:,} rows | speed-up "
              f"| api.db, {args.small:,} rows | api.db {args.rows:,} / {args.small:,} |")
    print(header)
    print("|" + "---|" * 6)
    for result in results.values():
        print(
            f"| {result['server']} | {result['theirs_big']:.2f} s | {result['ours_big'] * 1000:.1f} ms "
            f"| {result['theirs_big'] / result['ours_big']:,.0f}x | {result['ours_small'] * 1000:.1f} ms "
            f"| {result['ours_big'] / result['ours_small']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
