"""api.db on real clusters: failover under load, read/write routing, lag, Galera state, PgBouncer, roles.

Figures the issue asks for (application errors and seconds to the first write after a
switchover and after a leader loss, the share of reads served by replicas) are printed to
stderr and logged at WARNING, so ``pytest -s`` or the log shows them.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from typing import Any

import peewee
import pytest

from api.db import Migration, connect, migrate_db
from api.db.health.wsgi import health_app, make_health_server
from api.db.migrate.tracker import MigrationTracker

from clusters import Galera, Patroni, PgBouncer, pg_query, wait_until

log = logging.getLogger("tests.clusters")

WRITERS = 4
WRITE_PAUSE = 0.05  # seconds between two writes of one writer
FAILOVER_BOUND = 60.0


def report(message: str) -> None:
    print(message, file=sys.stderr)
    log.warning(message)


def model_on(db: peewee.Database) -> type[peewee.Model]:
    """A table of writes, bound to ``db``."""

    class Write(peewee.Model):
        writer = peewee.IntegerField()
        at = peewee.FloatField()

        class Meta:
            database = db
            table_name = "ha_write"

    return Write


class WriteLoad:
    """``WRITERS`` threads inserting a row each ``WRITE_PAUSE`` s, each write on a pooled connection."""

    def __init__(self, db: peewee.Database) -> None:
        self.model = model_on(db)
        self.db = db
        self.errors: list[str] = []
        self.writes: list[float] = []  # monotonic time each write returned
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"writer-{i}", daemon=True)
            for i in range(WRITERS)
        ]

    def _run(self, writer: int) -> None:
        while not self._stop.is_set():
            try:
                with self.db.connection_context():
                    self.model.create(writer=writer, at=time.time())
            except Exception as exc:  # an application error: counted and reported by the test
                with self._lock:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    if len(self.errors) == 1:
                        log.warning("first application error:\n%s", traceback.format_exc())
            else:
                with self._lock:
                    self.writes.append(time.monotonic())
            self._stop.wait(WRITE_PAUSE)

    def first_write_after(self, moment: float, timeout: float) -> float:
        """Seconds from ``moment`` to the first write that returned after it began blocking."""

        def found() -> float | None:
            with self._lock:
                later = [t for t in self.writes if t > moment]
            return min(later) - moment if later else None

        seconds = wait_until(found, timeout, 0.05)
        assert seconds is not None, (
            f"no write succeeded within {timeout} s; errors: {self.errors[:3]}"
        )
        return float(seconds)

    def __enter__(self) -> WriteLoad:
        self.model.create_table(safe=True)
        for thread in self._threads:
            thread.start()
        assert wait_until(lambda: len(self.writes) >= WRITERS * 3, 20), (
            f"no writes: {self.errors[:3]}"
        )
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(FAILOVER_BOUND)


def blocked_after(writes: list[float], moment: float) -> tuple[float, float]:
    """(longest pause between successive writes from ``moment`` on, seconds from ``moment`` to its end).

    The end of the longest pause is the first successful write once the old primary was gone.
    """
    times = sorted([moment] + [t for t in writes if t >= moment])
    gaps = [(b - a, b) for a, b in zip(times, times[1:])] or [(0.0, moment)]
    gap, end = max(gaps)
    return gap, end - moment


# --------------------------------------------------------------------------- Patroni failover


def on_every_member(patroni: Patroni, database: str) -> str:
    """Wait for a ready cluster whose every member has ``database``; returns its multi-host URL.

    libpq stops at the first host that answers "database does not exist" (a member catching up).
    """
    patroni.wait_ready(60)

    def everywhere() -> bool:
        return all(
            (database,) in pg_query(m.host, m.port, "SELECT datname FROM pg_database")
            for m in patroni.members
        )

    assert wait_until(everywhere, 30, 0.2), f"{database} not on every member after 30 s"
    return patroni.multi_host_url(database)


def test_switchover_under_write_load_has_no_application_errors(
    patroni: Patroni, patroni_db: str
) -> None:
    db = connect(on_every_member(patroni, patroni_db))
    try:
        with WriteLoad(db) as load:
            moment = time.monotonic()
            new, _ = patroni.switchover()
            load.first_write_after(time.monotonic(), FAILOVER_BOUND)
            time.sleep(1.0)
        blocked, seconds = blocked_after(load.writes, moment)
        report(
            f"patroni switchover under {WRITERS}-thread load: {len(load.errors)} application errors, "
            f"writes blocked at most {blocked:.2f} s, first write after the pause {seconds:.2f} s after the "
            f"request (new leader {new.name}); errors: {load.errors[:3]}"
        )
        assert load.errors == []
        assert pg_query(new.host, new.port, "SELECT pg_is_in_recovery()")[0][0] is False
    finally:
        db.close_all()
        patroni.wait_ready(60)


def test_migration_during_switchover_ends_exactly_once(patroni: Patroni, patroni_db: str) -> None:
    patroni.wait_ready(60)

    def slow(m: Any) -> None:
        m.sql("CREATE TABLE ha_once (id serial PRIMARY KEY, note text)")
        m.sql("INSERT INTO ha_once (note) VALUES ('applied')")
        m.sql("SELECT pg_sleep(1.5)")

    migrations = [Migration("0001_ha_once", slow)]
    db = connect(on_every_member(patroni, patroni_db))
    outcomes: list[str] = []
    try:

        def boot() -> None:
            for _ in range(10):  # a container restarted after each failed boot
                try:
                    migrate_db(db, migrations, lock_timeout=60)
                except (
                    Exception
                ) as exc:  # the failed boot is recorded; the next boot must finish the job
                    outcomes.append(f"failed: {type(exc).__name__}")
                    time.sleep(0.5)
                else:
                    outcomes.append("ok")
                    return

        booting = threading.Thread(target=boot, name="boot")
        booting.start()
        time.sleep(0.5)
        patroni.switchover()
        booting.join(120)
        report(f"patroni migration during a switchover: boots {outcomes}")
        assert outcomes[-1] == "ok"
        with db.connection_context():
            rows = db.execute_sql("SELECT count(*) FROM ha_once").fetchone()[0]
            history = [
                r
                for r in MigrationTracker(db).get_migration_history()
                if r.migration_name == "0001_ha_once"
            ]
        assert rows == 1
        assert [r.status for r in history].count("success") == 1
        assert migrate_db(db, migrations).fast_path
    finally:
        db.close_all()
        patroni.wait_ready(60)


def test_leader_loss_under_write_load_has_no_application_errors(
    patroni: Patroni, patroni_db: str
) -> None:
    db = connect(on_every_member(patroni, patroni_db))
    killed = None
    try:
        with WriteLoad(db) as load:
            moment = time.monotonic()
            killed = patroni.kill_leader(patroni_too=True)
            new, _ = patroni.wait_writable(FAILOVER_BOUND, not_on=killed.name)
            load.first_write_after(time.monotonic(), FAILOVER_BOUND)
            time.sleep(1.0)
        blocked, seconds = blocked_after(load.writes, moment)
        report(
            f"patroni leader loss (Patroni and postmaster of {killed.name} SIGKILLed) under {WRITERS}-thread "
            f"load: {len(load.errors)} application errors, first write after the pause {seconds:.2f} s after "
            f"the kill, writes blocked at most {blocked:.2f} s (new leader {new.name}); "
            f"errors: {load.errors[:3]}"
        )
        assert load.errors == []
        assert new.name != killed.name
    finally:
        db.close_all()
        if killed is not None:
            patroni.restart(killed)


# --------------------------------------------------------------------------- routing and lag


@contextlib.contextmanager
def routed(patroni: Patroni, database: str, **settings: Any) -> Iterator[Any]:
    """A routing database: the multi-host URL as primary, every replica of now as a replica."""
    url = on_every_member(patroni, database)
    leader = patroni.wait_ready(60)
    replicas = [m.url(database) for m in patroni.members if m is not leader]
    db = connect(url, replicas=replicas, **settings)
    try:

        def all_healthy() -> (
            bool
        ):  # the new database reaches the replicas a moment after its creation
            db.poll_replicas()
            return all(member.healthy for member in db.replica_members)

        assert wait_until(all_healthy, 15, 0.2), db.members()
        yield db
    finally:
        db.close_all()


def recovery(db: Any) -> bool:
    return bool(db.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0])


def test_reads_on_replicas_writes_and_transactions_on_primary(
    patroni: Patroni, patroni_db: str
) -> None:
    with routed(patroni, patroni_db, read_your_writes=0.5) as db:
        db.execute_sql("CREATE TABLE ha_route (v int)")
        time.sleep(0.6)
        reads = [recovery(db) for _ in range(60)]
        with db.atomic():
            in_transaction = [recovery(db) for _ in range(5)]
            db.execute_sql("INSERT INTO ha_route VALUES (1)")
        after_write = recovery(db)  # read-your-writes: still the primary
        with db.primary():
            forced = recovery(db)
        writer = db.execute_sql(
            "INSERT INTO ha_route VALUES (2) RETURNING pg_is_in_recovery()"
        ).fetchone()[0]
        members = {m["member"]: m["reads_total"] for m in db.members()}
        replica_reads = sum(v for k, v in members.items() if k != "primary")
        share = replica_reads / max(1, sum(members.values()))
        report(
            f"routing: {replica_reads} of {sum(members.values())} reads outside transactions served by "
            f"replicas ({share:.0%}); per member {members}"
        )
        assert all(reads), "a read outside a transaction reached the primary"
        assert not any(in_transaction) and not after_write and not forced and writer is False
        assert all(
            members[name] > 0 for name in members if name != "primary"
        )  # round robin reaches each


def test_lagging_replica_is_skipped_then_used_again(patroni: Patroni, patroni_db: str) -> None:
    poll, max_lag = 0.2, 1.0
    with routed(
        patroni, patroni_db, max_replica_lag=max_lag, replica_poll_interval=poll, read_your_writes=0
    ) as db:
        db.execute_sql("CREATE TABLE ha_lag (v int)")
        member = db.replica_members[0]
        server = member.database
        host, port = server.connect_params["host"], server.connect_params["port"]
        recovery(db)  # starts the poller
        patroni.set_maintenance(True)  # else Patroni resumes a paused replay within a second
        pg_query(host, port, "SELECT pg_wal_replay_pause()")
        try:
            paused_at = time.monotonic()

            def lagging() -> bool:
                db.execute_sql("INSERT INTO ha_lag VALUES (1)")
                return not member.healthy

            assert wait_until(lagging, 10, 0.05), (
                f"{member.name} never counted as lagging: {member.describe()}"
            )
            skipped_after = time.monotonic() - paused_at
            lag_seen = member.role.lag_seconds if member.role else None
            time.sleep(poll * 2)
            before = member.reads
            for _ in range(20):
                recovery(db)
            assert member.reads == before, "a lagging replica served a read"
        finally:
            pg_query(host, port, "SELECT pg_wal_replay_resume()")
            patroni.set_maintenance(False)
        assert wait_until(lambda: member.healthy, 10, 0.05), (
            f"{member.name} not used again: {member.describe()}"
        )
        back = member.reads
        for _ in range(20):
            recovery(db)
        report(
            f"lag: {member.name} skipped {skipped_after:.2f} s after pg_wal_replay_pause() "
            f"(max_replica_lag {max_lag} s, poll {poll} s, lag seen {lag_seen}), used again after resume"
        )
        assert skipped_after <= max_lag + 2 * poll + 2.0
        assert member.reads > back


# --------------------------------------------------------------------------- health over HTTP


@contextlib.contextmanager
def served(db: Any, **options: Any) -> Iterator[tuple[str, int]]:
    """``health_app(db)`` on a loopback port."""
    app = health_app(db, cache_ttl=options.pop("cache_ttl", 0.0), expose_details=True, **options)
    server = make_health_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="health-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        app.close()


def get(address: tuple[str, int], path: str) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection(*address, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_health_over_http_reports_each_patroni_members_role(patroni: Patroni) -> None:
    leader = patroni.wait_ready(60)
    for member in patroni.members:
        db = connect(member.url())
        try:
            with served(db) as address:
                status, body = get(address, "/health/detailed")
                ready, ready_body = get(address, "/health/ready")
            with served(db, ready_on_replica=False) as address:
                strict, _ = get(address, "/health/ready")
        finally:
            db.close_all()
        expected = "primary" if member is leader else "replica"
        assert status == 200 and body["cluster"]["role"] == expected, body
        assert ready == 200 and ready_body["role"] == expected
        assert strict == (200 if member is leader else 503)
        if expected == "replica":
            assert isinstance(body["cluster"]["lag_seconds"], float)


def test_health_over_http_reports_each_galera_node(galera: Galera) -> None:
    for node in (1, 2, 3):
        db = connect(galera.url(node))
        try:
            with served(db) as address:
                status, body = get(address, "/health/detailed")
                ready, _ = get(address, "/health/ready")
        finally:
            db.close_all()
        cluster = body["cluster"]
        assert (status, ready) == (200, 200)
        assert (cluster["role"], cluster["state"], cluster["cluster_size"]) == (
            "galera_node",
            "Synced",
            3,
        )


def test_galera_desync_makes_readiness_503_then_ready_again(galera: Galera) -> None:
    cache_ttl = 1.0
    db = connect(galera.url(2))
    try:
        with served(db, cache_ttl=cache_ttl) as address:
            assert get(address, "/health/ready")[0] == 200
            galera.desync(2)
            try:
                started = time.monotonic()
                assert wait_until(
                    lambda: get(address, "/health/ready")[0] == 503, cache_ttl + 5, 0.1
                )
                took = time.monotonic() - started
                status, body = get(address, "/health/ready")
                assert status == 503 and any("galera" in reason for reason in body["reasons"]), body
            finally:
                galera.resync(2)
            assert wait_until(lambda: get(address, "/health/ready")[0] == 200, cache_ttl + 5, 0.1)
        report(
            f"galera: readiness 503 {took:.2f} s after wsrep_desync=ON (cache {cache_ttl} s), 200 after OFF"
        )
        assert took <= cache_ttl + 1.5
    finally:
        db.close_all()


# --------------------------------------------------------------------------- PgBouncer


@pytest.fixture
def upstream_db(pgbouncer_transaction: PgBouncer) -> Iterator[str]:
    name = pgbouncer_transaction.create_database()
    try:
        yield name
    finally:
        pgbouncer_transaction.drop_database(name)


def show_timeout(db: Any) -> str:
    return str(db.execute_sql("SHOW statement_timeout").fetchone()[0])


@pytest.mark.parametrize("mode", ["transaction", "session"])
@pytest.mark.parametrize("pooler", ["auto", "pgbouncer"])
def test_production_preset_through_pgbouncer(
    mode: str,
    pooler: str,
    pgbouncer_transaction: PgBouncer,
    pgbouncer_session: PgBouncer,
    upstream_db: str,
) -> None:
    bouncer = pgbouncer_transaction if mode == "transaction" else pgbouncer_session
    db = connect(bouncer.url(upstream_db), preset="production", pooler=pooler)
    try:
        with db.connection_context():
            outside = show_timeout(db)
            with db.atomic():
                inside = show_timeout(db)
            after = show_timeout(db)
            name = db.execute_sql("SHOW application_name").fetchone()[0]
        assert (
            inside == "5min"
        )  # production: DB_STATEMENT_TIMEOUT 300 s, SET LOCAL in each transaction
        assert (
            outside == after == "0"
        )  # not sent as a startup option; SET LOCAL ends with its transaction
        # application_name (APP_NAME@host:pid) is a startup parameter PgBouncer carries
        assert name.startswith("api.db@")
        expected = "pgbouncer (configured)" if pooler == "pgbouncer" else "pgbouncer (detected"
        assert str(db.pooler_report()).startswith(expected)
        with served(db) as address:
            status, body = get(address, "/health/detailed")
        assert status == 200 and body["cluster"]["role"] == "primary" and body["cluster"]["pooler"]
    finally:
        db.close_all()
