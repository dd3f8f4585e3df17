"""PgBouncer in front of the local PostgreSQL: pooling modes really differ, startup options are refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg2
import pytest

import clusters
from clusters import PgBouncer


@pytest.fixture
def bouncer_db(pgbouncer_transaction: PgBouncer) -> Iterator[str]:
    """A fresh database on the upstream server, reached through the ``*`` entry."""
    name = pgbouncer_transaction.create_database()
    try:
        yield name
    finally:
        pgbouncer_transaction.drop_database(name)


def backend_pid(conn: Any) -> int:
    """``pg_backend_pid()`` in one transaction of ``conn``, committed."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        pid = cur.fetchone()[0]
    conn.commit()
    return int(pid)


def pids_across_transactions(bouncer: PgBouncer, database: str) -> tuple[int, int]:
    """Backend pids of two transactions of one client while another client holds a transaction."""
    a, b = bouncer.connect(database), bouncer.connect(database)
    with contextlib.closing(a), contextlib.closing(b):
        first = backend_pid(a)
        with b.cursor() as cur:  # b opens a transaction and keeps it: the server a just used is busy
            cur.execute("SELECT pg_backend_pid()")
            cur.fetchone()
        second = backend_pid(a)
        b.rollback()
        return first, second


def test_transaction_mode_moves_a_client_between_server_connections(
        pgbouncer_transaction: PgBouncer, bouncer_db: str) -> None:
    first, second = pids_across_transactions(pgbouncer_transaction, bouncer_db)
    assert first != second


def test_session_mode_pins_a_client_to_one_server_connection(
        pgbouncer_session: PgBouncer, pgbouncer_transaction: PgBouncer, bouncer_db: str) -> None:
    first, second = pids_across_transactions(pgbouncer_session, bouncer_db)
    assert first == second
    pools = {row["database"]: row for row in pgbouncer_session.show("POOLS")}
    assert pools[bouncer_db]["pool_mode"] == "session"


def test_eight_clients_share_the_small_server_pool(
        pgbouncer_transaction: PgBouncer, bouncer_db: str) -> None:
    conns = [pgbouncer_transaction.connect(bouncer_db) for _ in range(8)]
    try:
        pids = {backend_pid(conn) for conn in conns}
        pool = next(row for row in pgbouncer_transaction.show("POOLS") if row["database"] == bouncer_db)
        servers = sum(pool[key] for key in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"))
        assert pool["pool_mode"] == "transaction"
        assert pool["cl_active"] + pool["cl_waiting"] == 8
        assert len(pids) <= servers <= pgbouncer_transaction.default_pool_size
    finally:
        for conn in conns:
            conn.close()


def test_startup_options_refused_by_default(pgbouncer_transaction: PgBouncer) -> None:
    with pytest.raises(psycopg2.OperationalError) as caught:
        pgbouncer_transaction.connect(options="-c statement_timeout=4321")
    assert "unsupported startup parameter: options" in str(caught.value)


def test_variant_ignoring_options_accepts_and_drops_them() -> None:
    with clusters.start_pgbouncer("transaction", ("extra_float_digits", "options")) as bouncer:
        with contextlib.closing(bouncer.connect(options="-c statement_timeout=4321")) as conn:
            with conn.cursor() as cur:
                cur.execute("SHOW statement_timeout")
                assert cur.fetchone()[0] != "4321ms"  # accepted, and silently not applied
        config = {row["key"]: row["value"] for row in bouncer.show("CONFIG")}
        assert config["ignore_startup_parameters"] == "extra_float_digits,options"
