"""The cost of the boot call when nothing is pending, side by side with the peers.

For each engine (PostgreSQL, MariaDB) and each size (100 and 900 declared
migrations, all already applied), every tool gets a fresh database of its own, is
set up with that many trivial migrations and runs them once; then its boot call
is timed repeatedly, the way an application calls it at every start:

* api.db            ``migrate_db(db, MIGRATIONS)``: the whole list validated and its names
                    hashed at each call, then one query
* playhouse         ``playhouse.migrations.Runner(db, dir).up()``
* peewee-migrate    ``Router(db, migrate_dir=dir).run()``
* alembic           ``command.upgrade(config, "head")`` on an open connection
* yoyo              ``read_migrations(dir)``, then ``apply_migrations(to_apply(...))`` under its lock

Each tool keeps its connection open between calls, so only the boot call is
measured. Prints one table per engine with the median, the best, and the ratio
to api.db. Run: ``.venv/bin/python bench/noop_boot.py [--sizes 100,900] [--engines postgres,mariadb]``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import logging
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.db import connect, migrate_db  # noqa: E402
from api.db.cli import format_table  # noqa: E402

SERVERS = {
    "postgres": "postgresql://postgres@127.0.0.1:5432",
    "mariadb": "mysql://root@127.0.0.1:3306",
}
TIME_BUDGET = 2.0  # seconds of timed calls per tool and size
MIN_CALLS, MAX_CALLS = 3, 200


# -- databases -------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(engine: str) -> Iterator[str]:
    name = "apidb_bench_" + uuid.uuid4().hex[:10]
    base = SERVERS[engine]
    if engine == "postgres":
        import psycopg2

        admin = psycopg2.connect(base + "/postgres")
        admin.autocommit = True
        create, drop = f'CREATE DATABASE "{name}"', f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
    else:
        import pymysql

        admin = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
        create, drop = f"CREATE DATABASE `{name}`", f"DROP DATABASE IF EXISTS `{name}`"
    with admin.cursor() as cur:
        cur.execute(create)
    try:
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(drop)
        admin.close()


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg2://").replace("mysql://", "mysql+pymysql://")


# -- the tools: setup(url, n, workdir) -> (boot_call, close) ------------------------------

Tool = Callable[[str, int, Path], tuple[Callable[[], Any], Callable[[], None]]]


def tool_api_db(url: str, n: int, work: Path) -> tuple[Callable[[], Any], Callable[[], None]]:
    module_path = work / "app_migrations.py"
    lines = ["MIGRATIONS = ["] + [f"    ('m{i:04d}', lambda m: None)," for i in range(n)] + ["]"]
    module_path.write_text("\n".join(lines) + "\n")
    spec = importlib.util.spec_from_file_location(f"bench_app_migrations_{n}", module_path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    declared = list(module.MIGRATIONS)
    db = connect(url)
    report = migrate_db(db, declared)
    assert len(report.applied) == n, report.summary()

    def boot() -> Any:
        report = migrate_db(db, list(declared))
        assert report.fast_path and not report.pending_before
        return report

    statements: list[str] = []
    original = db.execute_sql

    def counting(sql: str, params: Any = None) -> Any:
        statements.append(sql)
        return original(sql, params)

    db.execute_sql = counting
    boot()
    del db.execute_sql
    ROUND_TRIPS[url.rsplit("/", 1)[0], n] = len(statements)
    return boot, db.close_all


ROUND_TRIPS: dict[tuple[str, int], int] = {}


def tool_playhouse(url: str, n: int, work: Path) -> tuple[Callable[[], Any], Callable[[], None]]:
    from playhouse.migrations import Runner

    directory = work / "playhouse"
    directory.mkdir()
    for i in range(1, n + 1):
        (directory / f"{i:04d}_m.py").write_text("def up(migrator, db):\n    pass\n")
    db = connect(url)
    assert len(Runner(db, str(directory)).up()) == n

    def boot() -> Any:
        applied = Runner(db, str(directory)).up()
        assert applied == []
        return applied

    return boot, db.close_all


def tool_peewee_migrate(url: str, n: int, work: Path) -> tuple[Callable[[], Any], Callable[[], None]]:
    from peewee_migrate import Router

    directory = work / "peewee_migrate"
    directory.mkdir()
    body = (
        "def migrate(migrator, database, *, fake=False):\n    pass\n\n\n"
        "def rollback(migrator, database, *, fake=False):\n    pass\n"
    )
    for i in range(1, n + 1):
        (directory / f"{i:03d}_m.py").write_text(body)
    db = connect(url)
    quiet = logging.getLogger("peewee_migrate")
    quiet.setLevel(logging.WARNING)
    assert len(Router(db, migrate_dir=directory, logger=quiet).run()) == n

    def boot() -> Any:
        done = Router(db, migrate_dir=directory, logger=quiet).run()
        assert done == []
        return done

    return boot, db.close_all


def alembic_directory(work: Path, n: int, upgrade: Callable[[int], str] = lambda i: "pass") -> Path:
    """An Alembic script directory of ``n`` chained revisions r0001..; ``upgrade(i)`` is revision i's body."""
    directory = work / "alembic"
    (directory / "versions").mkdir(parents=True)
    (directory / "env.py").write_text(
        "from alembic import context\n\n"
        "context.configure(connection=context.config.attributes['connection'])\n"
        "with context.begin_transaction():\n"
        "    context.run_migrations()\n"
    )
    (directory / "script.py.mako").write_text("")
    for i in range(1, n + 1):
        down = f"'r{i - 1:04d}'" if i > 1 else "None"
        (directory / "versions" / f"r{i:04d}_m.py").write_text(
            "import sqlalchemy as sa\nfrom alembic import op\n\n"
            f"revision = 'r{i:04d}'\ndown_revision = {down}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n    {upgrade(i)}\n\n\ndef downgrade():\n    pass\n"
        )
    return directory


def tool_alembic(url: str, n: int, work: Path) -> tuple[Callable[[], Any], Callable[[], None]]:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    directory = alembic_directory(work, n)
    engine = create_engine(sqlalchemy_url(url))
    connection = engine.connect()
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes["connection"] = connection
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(config, "head")
    connection.commit()

    def boot() -> Any:
        command.upgrade(config, "head")
        connection.commit()

    def close() -> None:
        connection.close()
        engine.dispose()

    return boot, close


def tool_yoyo(url: str, n: int, work: Path) -> tuple[Callable[[], Any], Callable[[], None]]:
    from yoyo import get_backend, read_migrations

    directory = work / "yoyo"
    directory.mkdir()
    for i in range(1, n + 1):
        (directory / f"{i:04d}_m.py").write_text("steps = []\n")
    backend = get_backend(url)
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    with backend.lock():
        backend.apply_migrations(backend.to_apply(read_migrations(str(directory))))

    def boot() -> Any:
        migrations = read_migrations(str(directory))
        with backend.lock():
            pending = backend.to_apply(migrations)
            assert len(pending) == 0
            backend.apply_migrations(pending)

    return boot, backend.connection.close


TOOLS: dict[str, Tool] = {
    "api.db migrate_db": tool_api_db,
    "playhouse Runner.up": tool_playhouse,
    "peewee-migrate Router.run": tool_peewee_migrate,
    "alembic upgrade head": tool_alembic,
    "yoyo apply_migrations": tool_yoyo,
}


def time_calls(boot: Callable[[], Any]) -> list[float]:
    boot()  # warm-up: imports, prepared plans, first pool checkout
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < MAX_CALLS and (
        len(samples) < MIN_CALLS or time.perf_counter() - started < TIME_BUDGET
    ):
        t0 = time.perf_counter()
        boot()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,900")
    parser.add_argument("--engines", default="postgres,mariadb")
    parser.add_argument(
        "--tools", default=",".join(TOOLS), help="comma-separated subset of: " + ", ".join(TOOLS)
    )
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    tools = [t for t in TOOLS if t in args.tools.split(",")]
    logging.basicConfig(level=logging.WARNING)
    for engine in engines:
        results: dict[tuple[str, int], list[float]] = {}
        for n in sizes:
            for tool in tools:
                work = Path(tempfile.mkdtemp(prefix="apidb-bench-"))
                try:
                    with fresh_database(engine) as url:
                        boot, close = TOOLS[tool](url, n, work)
                        try:
                            results[(tool, n)] = time_calls(boot)
                        finally:
                            close()
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                median = statistics.median(results[(tool, n)])
                print(f"  {engine} {n:>4} {tool:<26} median {median:8.2f} ms", file=sys.stderr)
        rows = []
        for tool in tools:
            row: list[str] = [tool]
            for n in sizes:
                samples = results[(tool, n)]
                ours = statistics.median(results[(tools[0], n)]) if tools[0] == "api.db migrate_db" else None
                median = statistics.median(samples)
                ratio = f"{median / ours:.0f}x" if ours and tool != tools[0] else "1x"
                row += [f"{median:.2f}", f"{min(samples):.2f}", ratio]
            rows.append(row)
        headers = ["tool"]
        for n in sizes:
            headers += [f"median ms @{n}", f"best ms @{n}", f"vs api.db @{n}"]
        print(f"\n== no-op boot on {engine} ({', '.join(map(str, sizes))} migrations applied, "
              "nothing pending) ==")
        print(format_table(headers, rows))
        trips = ", ".join(f"{n}: {ROUND_TRIPS.get((SERVERS[engine], n), '?')}" for n in sizes)
        print(f"api.db statements sent per no-op boot, by number of migrations: {trips}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
