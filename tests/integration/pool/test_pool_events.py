"""Connection lifecycle hooks on real servers: each event fires exactly when it should."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from api.db import add_pool_listener, connect
from api.db.exceptions import PoolTimeout
from api.db.pool.events import EVENT_KINDS, REASONS, PoolEvent

from engines import Engine, kill_sessions, pool_sessions

FAST_RETRY: dict[str, Any] = {"retry_max_attempts": 2, "retry_initial_delay": 0.05, "retry_max_delay": 0.1}


class Recorder:
    """A listener keeping every event; ``kinds()`` lists them in order."""

    def __init__(self) -> None:
        self.events: list[PoolEvent] = []
        self.lock = threading.Lock()

    def __call__(self, event: PoolEvent) -> None:
        with self.lock:
            self.events.append(event)

    def kinds(self) -> list[str]:
        with self.lock:
            return [e.kind for e in self.events]

    def clear(self) -> None:
        with self.lock:
            self.events.clear()

    def wait_for(self, kind: str, timeout: float = 5.0) -> PoolEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [e for e in self.events if e.kind == kind]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {kind} event in {self.kinds()}")


@pytest.fixture
def make_db(db_url: str) -> Iterator[Any]:
    """``make(**settings)``: a database from connect() on the fresh test database, closed afterwards."""
    made: list[Any] = []

    def make(**settings: Any) -> Any:
        if not db_url.startswith("sqlite"):
            settings.setdefault("min_connections", 0)
            settings.setdefault("app_name", f"apidb-ev-{uuid.uuid4().hex[:8]}")
            for key, value in FAST_RETRY.items():
                settings.setdefault(key, value)
        database = connect(db_url, environ={}, **settings)
        made.append(database)
        return database

    yield make
    for database in made:
        getattr(database, "close_all", database.close)()


def _check_event(event: PoolEvent, pool: str) -> None:
    assert event.kind in EVENT_KINDS and event.pool == pool
    assert event.reason is None or event.reason in REASONS
    for value in event.to_dict().values():  # plain data only: no driver object reaches a callback
        assert value is None or isinstance(value, (str, int, float))


def test_open_checkout_checkin_and_reuse(make_db: Any, engine: Engine) -> None:
    database = make_db()
    recorder = Recorder()
    remove = add_pool_listener(database, recorder)
    database.connect()
    database.execute_sql("SELECT 1")
    database.close()
    pooled = engine.family != "sqlite"
    assert recorder.kinds() == ["connected", "checked_out", "checked_in"] + ([] if pooled else ["closed"])
    checkout = recorder.events[1]
    assert checkout.wait_seconds is not None and 0 <= checkout.wait_seconds < 1
    assert recorder.events[0].connection == checkout.connection == recorder.events[2].connection
    for event in recorder.events:
        _check_event(event, database._api_db_state.url)
    recorder.clear()
    database.connect()
    database.close()
    if pooled:  # the idle connection is reused: no new one opened, none closed
        assert recorder.kinds() == ["checked_out", "checked_in"]
    else:
        assert recorder.kinds() == ["connected", "checked_out", "checked_in", "closed"]
    remove()
    recorder.clear()
    database.connect()
    database.close()
    assert recorder.kinds() == [], "a removed listener hears nothing"


def test_a_raising_callback_does_not_break_a_checkout(
    make_db: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    database = make_db()
    recorder = Recorder()

    def broken(event: PoolEvent) -> None:
        raise RuntimeError(f"listener bug on {event.kind}")

    add_pool_listener(database, broken)
    add_pool_listener(database, recorder)
    caplog.set_level(logging.WARNING, logger="api.db")
    with database.connection_context():
        assert database.execute_sql("SELECT 1").fetchone()[0] == 1
    assert "checked_out" in recorder.kinds() and "checked_in" in recorder.kinds(), "later listeners still run"
    failures = [r for r in caplog.records if "listener" in r.getMessage() and "failed on" in r.getMessage()]
    assert failures and {r.__dict__["event"] for r in failures} >= {"checked_out", "checked_in"}
    assert all(r.__dict__["pool"] == database._api_db_state.url for r in failures)


@pytest.mark.engines("postgres", "mysql")
def test_session_reset_on_check_in(make_db: Any) -> None:
    database = make_db(reset_session="always")
    recorder = Recorder()
    add_pool_listener(database, recorder)
    with database.connection_context():
        database.execute_sql("SELECT 1")
    assert recorder.kinds() == ["connected", "checked_out", "checked_in", "reset"]


@pytest.mark.engines("postgres", "mysql")
def test_a_connection_killed_by_the_server_is_discarded_as_dead(
    make_db: Any, engine: Engine, db_url: str
) -> None:
    app_name = f"apidb-evk-{uuid.uuid4().hex[:8]}"
    database = make_db(app_name=app_name)
    with database.connection_context():
        database.execute_sql("SELECT 1")
    recorder = Recorder()
    add_pool_listener(database, recorder)
    sessions = pool_sessions(engine, db_url, app_name)
    assert len(sessions) == 1
    kill_sessions(engine, sessions)
    time.sleep(0.3)  # the server closes the socket
    with database.connection_context():
        assert database.execute_sql("SELECT 1").fetchone()[0] == 1
    kinds = recorder.kinds()
    assert kinds == ["discarded", "closed", "connected", "checked_out", "checked_in"], kinds
    discarded = recorder.events[0]
    assert discarded.reason == "dead" and discarded.connection == recorder.events[1].connection


def _acquire_and_forget(database: Any) -> None:
    database.connect()  # the leak: never closed


@pytest.mark.engines("postgres", "mysql")
def test_a_leak_is_reclaimed_and_the_waiter_checks_out_with_its_wait(make_db: Any) -> None:
    database = make_db(max_connections=1, acquire_timeout=5)
    recorder = Recorder()
    add_pool_listener(database, recorder)
    worker = threading.Thread(target=_acquire_and_forget, args=(database,), name="leaker")
    worker.start()
    worker.join()
    with database.connection_context():  # waits until the maintenance pass reclaims the slot
        database.execute_sql("SELECT 1")
    kinds = recorder.kinds()
    assert kinds[:2] == ["connected", "checked_out"], kinds
    reclaimed = [e for e in recorder.events if e.kind == "discarded"]
    assert [e.reason for e in reclaimed] == ["leaked"]
    assert reclaimed[0].connection == recorder.events[0].connection
    second = [e for e in recorder.events if e.kind == "checked_out"][1]
    assert second.wait_seconds is not None and second.wait_seconds > 0.0
    assert kinds.index("discarded") < kinds.index("closed") < len(kinds) - 1


def _hold(database: Any, release: threading.Event, ready: threading.Event) -> None:
    with database.connection_context():
        ready.set()
        release.wait(10)


@pytest.mark.engines("postgres", "mysql")
def test_an_acquire_timeout_fires_with_its_wait(make_db: Any) -> None:
    database = make_db(max_connections=1, acquire_timeout=0.3)
    recorder = Recorder()
    add_pool_listener(database, recorder)
    release, ready = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold, args=(database, release, ready))
    holder.start()
    try:
        assert ready.wait(10)
        with pytest.raises(PoolTimeout):
            database.connect()
    finally:
        release.set()
        holder.join(10)
    timeout = recorder.wait_for("acquire_timeout")
    assert timeout.wait_seconds == pytest.approx(0.3) and timeout.connection is None
    assert recorder.kinds().count("acquire_timeout") == 1


@pytest.mark.engines("postgres", "mysql")
def test_close_all_closes_idle_connections(make_db: Any) -> None:
    database = make_db()
    with database.connection_context():
        database.execute_sql("SELECT 1")
    recorder = Recorder()
    add_pool_listener(database, recorder)
    database.close_all()
    assert recorder.kinds() == ["closed"]
