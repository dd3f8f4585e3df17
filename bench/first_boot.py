"""First boot: N pending ``add_column`` migrations applied, side by side with the peers, in one run.

For each engine (PostgreSQL, MariaDB), each N (30, 300, 900) and each tool, a fresh database
gets a table ``t`` and the tool applies N migrations, migration i adding the nullable integer
column ``c<i>`` (the same ``ALTER TABLE t ADD COLUMN c<i> INTEGER`` from every tool):

* raw DDL           the N statements over one driver connection, autocommit (the floor)
* api.db            ``migrate_db(db, MIGRATIONS)`` (``atomic="all"``, the default) and ``atomic="each"``
* alembic           ``command.upgrade(config, "head")`` on an open connection, ``op.add_column``
* peewee-migrate    ``Router(db, migrate_dir=dir).run()``, ``migrator.sql``
* playhouse         ``playhouse.migrations.Runner(db, dir).up()``,
                    ``migrator.migrate(migrator.add_column(...))``
* yoyo              ``apply_migrations(to_apply(read_migrations(dir)))`` under its lock

Each configuration runs ``--repeat`` times (a fresh database each time); the table gives the best and
the median seconds, the ratio of the best to the fastest peer and to the floor, and the statements
each tool sends per migration (counted in a separate run at the smallest N: peewee ``query_hooks``
for api.db, peewee-migrate and playhouse; SQLAlchemy's ``before_cursor_execute`` for Alembic; yoyo's
DB-API cursor wrapped). A last table times api.db's no-op boot at 100 declared migrations against a
bare ``SELECT 1`` on the same connection.

Run: ``.venv/bin/python bench/first_boot.py [--sizes 30,300,900] [--engines postgres,mariadb] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import peewee  # noqa: E402
from noop_boot import alembic_directory, fresh_database, sqlalchemy_url  # noqa: E402

from api.db import connect, migrate_db  # noqa: E402
from api.db.cli import format_table  # noqa: E402
from api.db.migrate.declarations import Migration  # noqa: E402

# setup(url, n, workdir, count) -> (apply, close): apply is timed; count collects the statements sent
Setup = tuple[Callable[[], Any], Callable[[], None]]
Tool = Callable[[str, int, Path, list[str] | None], Setup]
DDL = "ALTER TABLE t ADD COLUMN c{i} INTEGER"


def _prepare(url: str) -> None:
    db = connect(url)
    db.execute_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    db.close_all()


def _hooked(db: Any, count: list[str] | None) -> None:
    if count is not None:
        db.query_hooks.append(lambda event: count.append(event.sql))


def tool_raw(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
    db = connect(url)
    conn = db.connection()
    if hasattr(conn, "autocommit") and not callable(conn.autocommit):
        conn.autocommit = True  # psycopg2: no transaction, like the MariaDB DDL

    def apply() -> None:
        with conn.cursor() as cur:
            for i in range(n):
                cur.execute(DDL.format(i=i))
                if count is not None:
                    count.append(DDL.format(i=i))
        if not getattr(conn, "autocommit", True):
            conn.commit()

    return apply, db.close_all


def _api_db(atomic: str) -> Tool:
    def tool(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
        def add(i: int) -> Any:
            return lambda m: m.add_column("t", f"c{i}", peewee.IntegerField(null=True))

        declared = [Migration(f"m{i:04d}", add(i)) for i in range(n)]
        db = connect(url)
        db.connection()
        _hooked(db, count)

        def apply() -> None:
            report = migrate_db(db, declared, atomic=atomic)
            assert len(report.applied) == n, report.summary()

        return apply, db.close_all

    return tool


def tool_alembic(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, event

    directory = alembic_directory(work, n, lambda i: f"op.add_column('t', sa.Column('c{i - 1}', sa.Integer))")
    engine = create_engine(sqlalchemy_url(url))
    if count is not None:
        event.listen(engine, "before_cursor_execute", lambda *args: count.append(args[2]))
    connection = engine.connect()
    config = Config()
    config.set_main_option("script_location", str(directory))
    config.attributes["connection"] = connection
    logging.getLogger("alembic").setLevel(logging.WARNING)

    def apply() -> None:
        command.upgrade(config, "head")
        connection.commit()

    def close() -> None:
        connection.close()
        engine.dispose()

    return apply, close


def tool_peewee_migrate(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
    from peewee_migrate import Router

    directory = work / "peewee_migrate"
    directory.mkdir()
    for i in range(n):
        (directory / f"{i + 1:03d}_m.py").write_text(
            f"def migrate(migrator, database, *, fake=False):\n    migrator.sql('{DDL.format(i=i)}')\n\n\n"
            "def rollback(migrator, database, *, fake=False):\n    pass\n"
        )
    db = connect(url)
    _hooked(db, count)
    quiet = logging.getLogger("peewee_migrate")
    quiet.setLevel(logging.WARNING)

    def apply() -> None:
        assert len(Router(db, migrate_dir=directory, logger=quiet).run()) == n

    return apply, db.close_all


def tool_playhouse(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
    from playhouse.migrations import Runner

    directory = work / "playhouse"
    directory.mkdir()
    for i in range(n):
        (directory / f"{i + 1:04d}_m.py").write_text(
            "import peewee\n\n\ndef up(migrator, db):\n"
            f"    migrator.migrate(migrator.add_column('t', 'c{i}', peewee.IntegerField(null=True)))\n"
        )
    db = connect(url)
    _hooked(db, count)

    def apply() -> None:
        assert len(Runner(db, str(directory)).up()) == n

    return apply, db.close_all


def tool_yoyo(url: str, n: int, work: Path, count: list[str] | None) -> Setup:
    from yoyo import get_backend, read_migrations

    directory = work / "yoyo"
    directory.mkdir()
    for i in range(n):
        text = f"from yoyo import step\n\nsteps = [step('{DDL.format(i=i)}')]\n"
        (directory / f"{i:04d}_m.py").write_text(text)
    backend = get_backend(url)
    logging.getLogger("yoyo").setLevel(logging.WARNING)
    if count is not None:
        original = backend.execute

        def counted(sql: Any, params: Any = None) -> Any:
            count.append(str(sql))
            return original(sql, params)

        backend.execute = counted  # type: ignore[method-assign]

    def apply() -> None:
        with backend.lock():
            backend.apply_migrations(backend.to_apply(read_migrations(str(directory))))

    return apply, backend.connection.close


TOOLS: dict[str, Tool] = {
    "raw DDL (floor)": tool_raw,
    "api.db migrate_db": _api_db("all"),
    'api.db atomic="each"': _api_db("each"),
    "alembic upgrade head": tool_alembic,
    "peewee-migrate": tool_peewee_migrate,
    "playhouse.migrations": tool_playhouse,
    "yoyo": tool_yoyo,
}
OURS = ("api.db migrate_db", 'api.db atomic="each"')
FLOOR = "raw DDL (floor)"


def run_once(engine: str, tool: Tool, n: int, count: list[str] | None = None) -> float:
    with fresh_database(engine) as url, tempfile.TemporaryDirectory() as work:
        _prepare(url)
        apply, close = tool(url, n, Path(work), count)
        try:
            started = time.perf_counter()
            apply()
            return time.perf_counter() - started
        finally:
            close()


def per_migration(engine: str, tool: Tool, n: int) -> float:
    """Statements sent per migration beyond its DDL: the difference between n and 2n, over n."""
    small: list[str] = []
    run_once(engine, tool, n, small)
    large: list[str] = []
    run_once(engine, tool, 2 * n, large)
    return (len(large) - len(small)) / n - 1


def noop_against_select1(engine: str, declared: int = 100, calls: int = 400) -> list[list[str]]:
    with fresh_database(engine) as url:
        db = connect(url)
        migrations = [(f"m{i:04d}", lambda m: None) for i in range(declared)]
        migrate_db(db, migrations)
        sent: list[str] = []
        db.query_hooks.append(lambda event: sent.append(event.sql))
        migrate_db(db, migrations)
        db.query_hooks.clear()
        samples: dict[str, list[float]] = {"SELECT 1": [], "no-op migrate_db": []}
        for _ in range(calls):
            for label, call in (("SELECT 1", lambda: db.execute_sql("SELECT 1").fetchone()),
                                ("no-op migrate_db", lambda: migrate_db(db, migrations))):  # fmt: skip
                t0 = time.perf_counter()
                call()
                samples[label].append((time.perf_counter() - t0) * 1e6)
        db.close_all()
    select1 = statistics.median(samples["SELECT 1"])
    rows = []
    for label, values in samples.items():
        med = statistics.median(values)
        rows.append([engine, label, f"{med:.0f}", f"{min(values):.0f}", f"{med / select1:.2f}",
                     str(len(sent)) if label != "SELECT 1" else "1"])  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30,300,900")
    parser.add_argument("--engines", default="postgres,mariadb")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tools", default=",".join(TOOLS))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    chosen = [t for t in TOOLS if t in args.tools.split(",")]
    for engine in args.engines.split(","):
        rows = []
        for n in sizes:
            best: dict[str, float] = {}
            median: dict[str, float] = {}
            for name in chosen:
                times = [run_once(engine, TOOLS[name], n) for _ in range(args.repeat)]
                best[name], median[name] = min(times), statistics.median(times)
            peers = [best[t] for t in chosen if t not in OURS and t != FLOOR]
            fastest_peer = min(peers) if peers else float("nan")
            for name in chosen:
                rows.append([
                    str(n), name, f"{best[name]:.3f}", f"{median[name]:.3f}",
                    f"{best[name] / fastest_peer:.2f}", f"{best[name] / best.get(FLOOR, float('nan')):.2f}",
                ])  # fmt: skip
            print(f"# {engine} N={n} done", file=sys.stderr, flush=True)
        print(f"\n## {engine}: first boot, seconds (best and median of {args.repeat})\n")
        print(format_table(["N", "tool", "best s", "median s", "best / fastest peer", "best / floor"], rows))
        counts = [[name, f"{per_migration(engine, TOOLS[name], min(sizes)):.2f}"] for name in chosen]
        small = min(sizes)
        print(f"\n## {engine}: statements per migration beyond its DDL (from N={small} and {2 * small})\n")
        print(format_table(["tool", "statements"], counts))
        print(f"\n## {engine}: no-op boot at 100 declared migrations against SELECT 1, microseconds\n")
        print(format_table(["engine", "call", "median us", "best us", "median / SELECT 1", "statements"],
                           noop_against_select1(engine)))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
