"""The migration lock on the direct engines: which strategy, the lease, heartbeat, fencing, release."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from api.db import Migration, connect, migrate_db
from api.db.engines import engine_for
from api.db.exceptions import ConfigurationError, MigrationLockLost, MigrationLockTimeout
from api.db.migrate.lease import LOCK_TABLE, Lease
from api.db.migrate.lock import acquire_migration_lock, migration_lock
from api.db.migrate.tracker import MigrationTracker

from engines import Engine, admin_cursor

BASIC = [
    ("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(40))")),
    ("fill_doc", lambda m: m.sql("INSERT INTO doc (id, title) VALUES (1, 'a')")),
]


def _rows(db: Any, sql: str) -> list[tuple[Any, ...]]:
    with db.connection_context():
        return list(db.execute_sql(sql).fetchall())


def _history(db: Any) -> dict[str, str]:
    with db.connection_context():
        return {r.migration_name: r.status for r in MigrationTracker(db).get_migration_history()}


def _other(db_url: str) -> Any:
    """A second api.db database on the same target, as another replica would have."""
    return connect(db_url)


def _close(db: Any) -> None:
    getattr(db, "close_all", db.close)()


def _heartbeats() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("api.db-lease-heartbeat")]


# -- which lock -------------------------------------------------------------------------------


def test_auto_picks_advisory_on_a_direct_server_and_the_lease_on_sqlite(
    db: Any, engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="api.db")
    report = migrate_db(db, BASIC)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("migration lock: ")]
    assert len(lines) == 1, lines
    if engine.family == "sqlite":
        assert (report.lock, report.lock_reason) == ("lease", "sqlite has no session lock")
        assert lines[0].startswith("migration lock: lease (sqlite has no session lock), lease ttl 30 s")
    else:
        assert (report.lock, report.lock_reason) == ("advisory", "session pinned")
        assert lines[0] == "migration lock: advisory (session pinned)"
    assert report.to_dict()["lock"] == report.lock
    assert migrate_db(db, BASIC).lock is None  # the fast path takes no lock


@pytest.mark.engines("sqlite")
def test_advisory_is_refused_where_the_session_is_not_pinned(db: Any) -> None:
    with pytest.raises(ConfigurationError, match="lock='advisory' needs a session pinned.*lock='lease'"):
        migrate_db(db, BASIC, lock="advisory")
    assert _history(db) == {}


def test_settings_come_from_the_environment_and_the_keyword_wins(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_DB_MIGRATION_LOCK", "lease")
    monkeypatch.setenv("API_DB_LEASE_TTL", "7")
    report = migrate_db(db, BASIC[:1])
    assert (report.lock, report.lock_reason) == ("lease", "requested")
    monkeypatch.setenv("API_DB_MIGRATION_LOCK", "sometimes")
    with pytest.raises(ConfigurationError, match="API_DB_MIGRATION_LOCK must be one of"):
        migrate_db(db, BASIC)
    report = migrate_db(db, BASIC, lock="auto", lease_ttl=5)
    assert report.lock in ("advisory", "lease") and report.lock_reason != "requested"
    with pytest.raises(ConfigurationError, match="lease_ttl must be a number of seconds"):
        migrate_db(db, [*BASIC, ("more", lambda m: None)], lock="lease", lease_ttl=0)


# -- the lease -------------------------------------------------------------------------------


def test_lease_run_leaves_no_row_and_no_thread(db: Any) -> None:
    report = migrate_db(db, BASIC, lock="lease", lease_ttl=3)
    assert report.applied == ["create_doc", "fill_doc"] and report.lock == "lease"
    assert _rows(db, f"SELECT COUNT(*) FROM {LOCK_TABLE}") == [(0,)]
    assert _heartbeats() == []


def test_lease_timeout_names_the_holder(db: Any, db_url: str) -> None:
    other = _other(db_url)
    try:
        with other.connection_context(), migration_lock(other, lock="lease", lease_ttl=30) as held:
            with pytest.raises(MigrationLockTimeout) as caught:
                migrate_db(db, BASIC, lock="lease", lock_timeout=0.5)
            assert caught.value.holder["token"] == held.owner[:8]
    finally:
        _close(other)
    text = str(caught.value)
    assert "owner=" in text and ":" in caught.value.holder["owner"] and "generation=1" in text
    assert "expires_in=" in text and "if it died, its lease expires" in text
    assert _history(db) == {}
    assert migrate_db(db, BASIC, lock="lease").applied  # released: free again


def test_an_expired_lease_is_taken_over_with_the_next_generation(
    db: Any, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    other = _other(db_url)
    try:
        with other.connection_context():
            dead = Lease(other, ttl=1)
            dead.acquire(5)
            assert dead._heartbeat is not None
            dead._heartbeat.stop()  # a holder that died: nobody renews its lease
    finally:
        _close(other)
    caplog.set_level(logging.INFO, logger="api.db")
    started = time.monotonic()
    report = migrate_db(db, BASIC, lock="lease", lock_timeout=10)
    assert report.applied == ["create_doc", "fill_doc"]
    assert time.monotonic() - started < 5
    messages = [r.getMessage() for r in caplog.records]
    assert any("expired" in m and "taking it over" in m for m in messages), messages
    assert any("generation 2" in m for m in messages), messages


def test_the_heartbeat_keeps_a_long_run_valid(db: Any, db_url: str) -> None:
    other = _other(db_url)
    outcome: dict[str, Any] = {}

    def contender() -> None:
        try:
            with other.connection_context():
                outcome["report"] = migrate_db(other, BASIC, lock="lease", lock_timeout=30)
        except Exception as exc:  # the assertion below shows it
            outcome["error"] = exc

    def slow(m: Any) -> None:
        thread.start()
        time.sleep(3.5)  # more than three ttls: only the heartbeat keeps the lease
        m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(40))")

    thread = threading.Thread(target=contender)
    try:
        report = migrate_db(db, [("create_doc", slow), BASIC[1]], lock="lease", lease_ttl=1)
        thread.join(30)
    finally:
        _close(other)
    assert report.applied == ["create_doc", "fill_doc"]
    assert "error" not in outcome, outcome
    assert outcome["report"].applied == [] and outcome["report"].fast_path is False


def test_a_lost_lease_stops_the_run_and_writes_nothing(db: Any, db_url: str, engine: Engine) -> None:
    """Another holder takes the row over mid-run (as after an expiry): fencing stops this one.

    SQLite: the migration runs outside a transaction (atomic=False), since inside one the run holds
    the file's write lock and no other writer could take the lease over at all.
    """

    def steal(m: Any) -> None:
        m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY, title VARCHAR(40))")
        _steal(engine, db_url)

    atomic = engine.family != "sqlite"
    with pytest.raises(MigrationLockLost) as caught:
        migrate_db(
            db, [Migration("create_doc", steal, atomic=atomic), BASIC[1]], lock="lease", atomic="each"
        )
    assert caught.value.strategy == "lease" and "lost the migration lease" in str(caught.value)
    history = _history(db)
    assert history.get("create_doc") != "success" and "fill_doc" not in history
    if engine_for(db).transactional_ddl() and atomic:  # rolled back with its fenced history row
        assert history == {}
        with db.connection_context():
            assert not db.table_exists("doc")
    else:  # left running, resumed by the next boot
        assert history == {"create_doc": "running"}
    assert _heartbeats() == []
    again = [
        (
            "create_doc",
            lambda m: m.sql("CREATE TABLE IF NOT EXISTS doc (id INTEGER PRIMARY KEY, title VARCHAR(40))"),
        ),
        BASIC[1],
    ]
    assert migrate_db(db, again, lock="lease", lock_timeout=10).applied == ["create_doc", "fill_doc"]


def _steal(engine: Engine, db_url: str) -> None:
    """What a takeover does to the row (by a taker that then died at once), from another session."""
    sql = f"UPDATE {LOCK_TABLE} SET token = 'someone-else', generation = generation + 1, expires_at = 0"
    if engine.family == "sqlite":
        import sqlite3

        holder = sqlite3.connect(db_url[len("sqlite:///") :], isolation_level=None, timeout=10)
        try:
            holder.execute(sql)
        finally:
            holder.close()
        return
    with admin_cursor(engine, db_url) as cur:
        cur.execute(sql)


def test_release_of_a_lost_lease_is_an_error(db: Any, db_url: str, engine: Engine) -> None:
    with db.connection_context():
        handle = acquire_migration_lock(db, "lease", timeout=5, ttl=30)
        _steal(engine, db_url)
        with pytest.raises(MigrationLockLost, match="gone or another holder's at release"):
            handle.release()


@pytest.mark.engines("postgres", "mysql")
def test_a_failed_advisory_unlock_is_an_error(db: Any, engine: Engine) -> None:
    """The session lock released behind the runner's back: the unlock returns false: MigrationLockLost."""
    label = engine_for(db).lock_label()
    release = (
        f"SELECT pg_advisory_unlock({label.split()[-1]})"
        if engine.family == "postgres"
        else f"SELECT RELEASE_LOCK('{label.split(' ', 1)[1]}')"
    )
    with pytest.raises(MigrationLockLost, match="was not held at release"):
        migrate_db(db, [("sneaky", lambda m: m.sql(release))], lock="advisory")
    assert _history(db) == {
        "sneaky": "success"
    }  # the work was done under the lock; the unlock failed after


def test_eight_processes_create_the_tables_on_a_fresh_database(
    engine: Engine, db_url: str, tmp_path: Any
) -> None:
    """No raw error from racing CREATE TABLE IF NOT EXISTS (lock table, history): 8 at once, lease forced."""
    import lockrounds

    lockrounds.prepare(db_url, 1)
    children = lockrounds.boot_round([db_url], 0, 8, {"API_DB_MIGRATION_LOCK": "lease"})
    lockrounds.assert_all_succeeded(children, 0)
    lockrounds.check_round(db_url, 0)


def test_the_fence_condition_holds_only_while_the_lease_is_ours(
    db: Any, db_url: str, engine: Engine
) -> None:
    """``handle.fence`` as the WHERE of a history write: true while ours, false once taken over."""
    migrate_db(db, BASIC)
    with db.connection_context():
        handle = acquire_migration_lock(db, "lease", timeout=5, ttl=30)
        H = MigrationTracker(db).History
        assert H.update({H.error_message: "fenced"}).where(handle.fence).execute() == 2
        _steal(engine, db_url)
        assert H.update({H.error_message: "fenced again"}).where(handle.fence).execute() == 0
        with pytest.raises(MigrationLockLost):
            handle.release()
