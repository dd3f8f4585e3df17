"""Boot rounds for the migration-lock tests: many replicas at once, and the lock holder killed.

``prepare`` makes the counter and row tables; ``boot_round`` starts replicas
(``tests/integration/lock_child.py``) spread over the given URLs and collects what each said;
``check_round`` counts every side effect of a round; ``chaos_round`` SIGKILLs whichever replica
runs the migrations, at a random point, and measures how long the others take to finish the job.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHILD = str(Path(__file__).resolve().parent / "integration" / "lock_child.py")
ROOT = str(Path(__file__).resolve().parents[1])


@dataclass
class Child:
    """What one replica did: exit code, its JSON line, its stderr tail."""

    url: str
    returncode: int
    result: dict[str, Any]
    stderr: str

    @property
    def applied(self) -> list[str]:
        return list(self.result.get("report", {}).get("applied", []))

    def describe(self) -> str:
        return f"exit {self.returncode} on {self.url}: {self.result} {self.stderr[-1500:]}"


@dataclass
class Stats:
    """What a series of rounds counted, for the report of the test."""

    rounds: int = 0
    processes: int = 0
    side_effects: int = 0
    kills: int = 0
    recoveries: list[float] = field(default_factory=list)

    def line(self, label: str) -> str:
        text = f"{label}: {self.rounds} rounds, {self.processes} processes"
        text += f", {self.side_effects} side effects counted"
        if self.kills:
            text += (
                f", {self.kills} holders killed"
                f", recovery mean {sum(self.recoveries) / len(self.recoveries):.2f} s"
                f" max {max(self.recoveries):.2f} s"
            )
        return text


def _db(url: str) -> Any:
    from api.db import connect

    return connect(url)


def execute(url: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements through api.db on ``url`` (Galera: once caught up); the rows of the last one."""
    db = _db(url)
    rows: list[tuple[Any, ...]] = []
    try:
        with db.connection_context():
            if url.startswith("mysql"):
                try:
                    db.execute_sql("SET SESSION wsrep_sync_wait = 1")
                except Exception:  # no Galera: reads are current anyway
                    pass
            for statement in statements:
                cursor = db.execute_sql(statement)
                rows = list(cursor.fetchall()) if cursor.description else []
    finally:
        getattr(db, "close_all", db.close)()
    return rows


def prepare(url: str, rounds: int) -> None:
    """The tables the migrations write to, and one counter row per round (made before any boot)."""
    values = ", ".join(f"({r}, 0)" for r in range(rounds))
    execute(
        url,
        "CREATE TABLE lock_counter (round INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        "CREATE TABLE lock_rows (round INTEGER NOT NULL, k INTEGER NOT NULL, PRIMARY KEY (round, k))",
        f"INSERT INTO lock_counter (round, n) VALUES {values}",
    )


def spawn(url: str, r: int, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, CHILD, url, str(r)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT, **env},
    )


def collect(url: str, proc: subprocess.Popen[str], timeout: float = 180) -> Child:
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.strip().splitlines() if line.startswith("{")]
    return Child(url, proc.returncode, json.loads(lines[-1]) if lines else {}, err)


def boot_round(urls: list[str], r: int, processes: int, env: dict[str, str]) -> list[Child]:
    """``processes`` replicas booting round ``r`` at once, spread over ``urls``."""
    procs = [(urls[i % len(urls)], spawn(urls[i % len(urls)], r, env)) for i in range(processes)]
    return [collect(url, proc) for url, proc in procs]


def check_round(url: str, r: int) -> int:
    """Assert each side effect of round ``r`` happened exactly once; return how many were counted."""
    counter = execute(url, f"SELECT n FROM lock_counter WHERE round = {r}")
    rows = execute(url, f"SELECT k FROM lock_rows WHERE round = {r} ORDER BY k")
    tables = execute(url, f"SELECT COUNT(*) FROM lock_t{r}")  # raises when the table is missing
    history = {
        name: status
        for name, status in execute(url, "SELECT migration_name, status FROM migration_history")
        if name.startswith(f"r{r:02d}_")
    }
    assert counter == [(1,)], f"round {r}: counter {counter}"
    assert [k for (k,) in rows] == [0, 1, 2], f"round {r}: rows {rows}"
    assert tables == [(0,)]
    assert history == {f"r{r:02d}_{n}": "success" for n in ("create", "count", "rows")}, history
    return 4  # the table, its creation row, the counter, the two-row insert


def assert_all_succeeded(children: list[Child], r: int) -> None:
    """Every replica exited 0; the round's migrations were applied once, by one of them."""
    failed = [c.describe() for c in children if c.returncode != 0]
    assert not failed, f"round {r}: " + "\n".join(failed)
    applied = sorted(name for c in children for name in c.applied)
    assert applied == [f"r{r:02d}_{n}" for n in ("count", "create", "rows")], applied


def chaos_round(
    urls: list[str], r: int, processes: int, env: dict[str, str], tmp: Path, window: float
) -> tuple[list[Child], float]:
    """Boot round ``r``; SIGKILL the replica running its migrations after a random delay in ``window``.

    Returns the survivors and the seconds from the kill to the last survivor's exit (negative: the
    holder had finished before the kill).
    """
    holder_file = tmp / f"holder-{r}"
    env = {**env, "APIDB_HOLDER_FILE": str(holder_file)}
    procs = [(urls[i % len(urls)], spawn(urls[i % len(urls)], r, env)) for i in range(processes)]
    deadline = time.monotonic() + 60
    while not (holder_file.exists() and holder_file.read_text()):
        assert time.monotonic() < deadline, "no replica started a migration"
        time.sleep(0.01)
    pid = int(holder_file.read_text())
    time.sleep(random.uniform(0, window))
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # it finished first: this round had no kill
        pid = -1
    killed = time.monotonic()
    survivors = []
    for url, proc in procs:
        if proc.pid == pid:
            proc.communicate(timeout=30)
            continue
        survivors.append(collect(url, proc))
    return survivors, (time.monotonic() - killed) if pid > 0 else -1.0


# -- the holder's server session ended from outside -------------------------------------------------


def _server_sessions(engine: Any, url: str, needle: str) -> list[Any]:
    from engines import admin_cursor

    with admin_cursor(engine, url) as cur:
        if engine.family == "postgres":
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE %s "
                "AND pid <> pg_backend_pid()",
                (f"%{needle}%",),
            )
        else:
            cur.execute(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND INFO LIKE %s "
                "AND ID <> CONNECTION_ID()",
                (f"%{needle}%",),
            )
        return [row[0] for row in cur.fetchall()]


def end_session(engine: Any, url: str, needle: str) -> None:
    """End the server session running a statement that contains ``needle`` (pg_terminate_backend, KILL)."""
    from engines import admin_cursor

    deadline = time.monotonic() + 60
    while not (ids := _server_sessions(engine, url, needle)):
        assert time.monotonic() < deadline, f"no session runs {needle}"
        time.sleep(0.05)
    with admin_cursor(engine, url) as cur:
        for session in ids:
            if engine.family == "postgres":
                cur.execute("SELECT pg_terminate_backend(%s)", (session,))
            else:
                cur.execute(f"KILL {int(session)}")


def session_killed_round(
    engine: Any, url: str, server_url: str, slow_sql: str, env: dict[str, str] | None = None
) -> Child:
    """Round 0 with a server-side sleep in its count migration, its session ended on ``server_url``.

    Asserts a typed error, a true history, and that the next boot completes; returns the replica.
    """
    proc = spawn(url, 0, {"APIDB_SLOW_SQL": slow_sql, **(env or {})})
    end_session(engine, server_url, slow_sql)
    child = collect(url, proc)
    assert child.returncode == 3, child.describe()  # an ApiDbError, explained
    assert child.result["error"] in ("MigrationError", "MigrationLockLost"), child.result
    assert "r00_count" in child.result["message"] or "lock" in child.result["message"], child.result
    history = dict(execute(url, "SELECT migration_name, status FROM migration_history"))
    assert history.get("r00_count") != "success" and "r00_rows" not in history, history
    nxt = boot_round([url], 0, 1, env or {})
    assert nxt[0].returncode == 0, nxt[0].describe()
    check_round(url, 0)
    return child
