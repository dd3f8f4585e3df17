"""Exactly once behind PgBouncer and on Galera: the lock picked, 6 replicas x 10 rounds, the holder killed.

One start of each topology serves every test here (session fixtures of conftest.py); the lease ttl
is 2 s in the chaos rounds so that a dead holder's lease expires quickly.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import lockrounds
import pytest

from api.db import connect, migrate_db

import engines
from clusters import Galera, PgBouncer

ROUNDS = 10
PROCESSES = 6
CHAOS_ROUNDS = 20
CHAOS_ENV = {"APIDB_SLEEP": "0.15", "API_DB_LEASE_TTL": "2"}
BASIC = [("create_doc", lambda m: m.sql("CREATE TABLE doc (id INTEGER PRIMARY KEY)"))]


@pytest.fixture
def bouncer_db(pgbouncer_transaction: PgBouncer) -> Iterator[str]:
    name = pgbouncer_transaction.create_database()
    try:
        yield name
    finally:
        pgbouncer_transaction.drop_database(name)


@pytest.fixture
def session_bouncer_db(pgbouncer_session: PgBouncer) -> Iterator[str]:
    name = pgbouncer_session.create_database()
    try:
        yield name
    finally:
        pgbouncer_session.drop_database(name)


def _direct_url(database: str) -> str:
    host, port = ("127.0.0.1", 5432)
    return f"postgresql://postgres@{host}:{port}/{database}"


def _chosen(url: str, caplog: pytest.LogCaptureFixture) -> tuple[str | None, str | None, list[str]]:
    caplog.set_level(logging.INFO, logger="api.db")
    db = connect(url)
    try:
        report = migrate_db(db, BASIC)
    finally:
        getattr(db, "close_all", db.close)()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("migration lock: ")]
    return report.lock, report.lock_reason, lines


# -- which lock -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_behind_pgbouncer_the_lease_is_chosen(
    mode: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    bouncer: PgBouncer = request.getfixturevalue(f"pgbouncer_{mode}")
    database = request.getfixturevalue("bouncer_db" if mode == "transaction" else "session_bouncer_db")
    lock, reason, lines = _chosen(bouncer.url(database), caplog)
    assert lock == "lease", (lock, reason)
    assert reason and ("pooler" in reason or "backend id changed" in reason), reason
    assert lines == [f"migration lock: lease ({reason}), lease ttl 30 s, generation 1"], lines
    with pytest.raises(Exception, match="lock='advisory' needs a session pinned"):
        db = connect(bouncer.url(database))
        try:
            migrate_db(db, [*BASIC, ("more", lambda m: None)], lock="advisory")
        finally:
            db.close_all()


def test_on_galera_the_lease_is_chosen(
    galera: Galera, galera_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    lock, reason, lines = _chosen(galera.url(2, galera_db), caplog)
    assert (lock, reason) == ("lease", "wsrep_on=ON (Galera)")
    assert lines == ["migration lock: lease (wsrep_on=ON (Galera)), lease ttl 30 s, generation 1"], lines


# -- 6 replicas x 10 rounds ----------------------------------------------------------------------------


def _rounds(label: str, urls: list[str], check_url: str) -> lockrounds.Stats:
    lockrounds.prepare(check_url, max(ROUNDS, CHAOS_ROUNDS))
    stats = lockrounds.Stats()
    for r in range(ROUNDS):
        children = lockrounds.boot_round(urls, r, PROCESSES, {"API_DB_LEASE_TTL": "5"})
        lockrounds.assert_all_succeeded(children, r)
        assert {c.result["report"]["lock"] for c in children} - {None} == {"lease"}
        stats.side_effects += lockrounds.check_round(check_url, r)
        stats.rounds += 1
        stats.processes += len(children)
    print(stats.line(label))
    return stats


def test_pgbouncer_transaction_six_replicas_ten_rounds(
    pgbouncer_transaction: PgBouncer, bouncer_db: str
) -> None:
    url = pgbouncer_transaction.url(bouncer_db)
    _rounds("pgbouncer transaction", [url], url)


def test_galera_six_replicas_ten_rounds_over_three_nodes(galera: Galera, galera_db: str) -> None:
    _rounds("galera 3 nodes", galera.urls_for(galera_db), galera.url(1, galera_db))


# -- chaos: the holder killed ---------------------------------------------------------------------------


def _chaos(label: str, urls: list[str], check_url: str, tmp_path: Path) -> lockrounds.Stats:
    lockrounds.prepare(check_url, CHAOS_ROUNDS)
    stats = lockrounds.Stats()
    for r in range(CHAOS_ROUNDS):
        survivors, recovery = lockrounds.chaos_round(urls, r, 3, CHAOS_ENV, tmp_path, window=0.6)
        failed = [c.describe() for c in survivors if c.returncode != 0]
        assert not failed, failed
        nxt = lockrounds.boot_round(urls[:1], r, 1, CHAOS_ENV)  # the next boot completes
        assert nxt[0].returncode == 0, nxt[0].describe()
        stats.side_effects += lockrounds.check_round(check_url, r)
        stats.rounds += 1
        stats.processes += len(survivors) + 2
        if recovery >= 0:
            stats.kills += 1
            stats.recoveries.append(recovery)
    assert stats.kills >= CHAOS_ROUNDS // 2
    print(stats.line(label))
    return stats


def test_pgbouncer_holder_killed_at_random_points(
    pgbouncer_transaction: PgBouncer, bouncer_db: str, tmp_path: Path
) -> None:
    url = pgbouncer_transaction.url(bouncer_db)
    _chaos("chaos pgbouncer transaction", [url], url, tmp_path)


def test_galera_holder_killed_at_random_points(galera: Galera, galera_db: str, tmp_path: Path) -> None:
    _chaos("chaos galera 3 nodes", galera.urls_for(galera_db), galera.url(1, galera_db), tmp_path)


# -- the holder's server session ended -------------------------------------------------------------------


def test_pgbouncer_holder_session_terminated_on_the_server(
    pgbouncer_transaction: PgBouncer, bouncer_db: str
) -> None:
    """pg_terminate_backend through the direct server, of the backend running the holder's statement."""
    url = pgbouncer_transaction.url(bouncer_db)
    lockrounds.prepare(url, 1)
    direct = engines.get_engine("postgres")
    try:
        lockrounds.session_killed_round(
            direct, url, _direct_url(bouncer_db), "SELECT pg_sleep(30)", {"API_DB_LEASE_TTL": "2"}
        )
    except AssertionError as exc:
        if "InterfaceError" in str(exc):
            pytest.xfail(
                "a PostgreSQL session ended mid-transaction still surfaces a raw InterfaceError from the "
                "rollback: the lost-connection part of issue 11 (runner) makes it a MigrationError"
            )
        raise


def test_galera_holder_session_killed(galera: Galera, galera_db: str) -> None:
    """KILL on the node of the holder's connection."""
    url = galera.url(2, galera_db)
    lockrounds.prepare(url, 1)
    node = engines.Engine("galera-n2", "mysql", base_url=galera.url(2, galera_db))
    lockrounds.session_killed_round(node, url, url, "SELECT SLEEP(30)", {"API_DB_LEASE_TTL": "2"})
