"""3-member Patroni: one primary, switchover and leader crash followed by writes on the leader."""

from __future__ import annotations

import contextlib
import logging
import sys

import psycopg2

from clusters import Patroni, PatroniMember, pg_query, wait_until

log = logging.getLogger("tests.clusters")

SWITCHOVER_BOUND = 30.0
CRASH_BOUND = 60.0


def primaries(patroni: Patroni) -> list[str]:
    """Members where ``pg_is_in_recovery()`` is false."""
    return [member.name for member in patroni.members if not member.in_recovery()]


def write_through_multi_host_url(patroni: Patroni, database: str, value: str) -> int:
    """Insert ``value`` through the multi-host URL (read-write target); returns the row count."""
    with contextlib.closing(psycopg2.connect(patroni.multi_host_url(database), connect_timeout=3)) as conn:
        with conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS t (v text)")
            cur.execute("INSERT INTO t VALUES (%s)", (value,))
            cur.execute("SELECT count(*) FROM t")
            return int(cur.fetchone()[0])


def report(what: str, seconds: float) -> None:
    message = f"patroni {what}: first accepted write after {seconds:.2f} s"
    print(message, file=sys.stderr)
    log.warning(message)


def test_exactly_one_member_is_primary(patroni: Patroni) -> None:
    leader = patroni.leader()
    assert leader is not None
    assert primaries(patroni) == [leader.name]
    others = sorted(m.name for m in patroni.members if m is not leader)
    assert sorted(m.name for m in patroni.replicas()) == others
    assert len(patroni.urls) == 3


def test_database_created_on_leader_reaches_replicas(patroni: Patroni, patroni_db: str) -> None:
    assert write_through_multi_host_url(patroni, patroni_db, "first") == 1
    for replica in patroni.replicas():
        def replicated(replica: PatroniMember = replica) -> bool:
            return (patroni_db,) in pg_query(replica.host, replica.port, "SELECT datname FROM pg_database")

        assert wait_until(replicated, 10), f"{patroni_db} not on {replica.name} after 10 s"


def test_switchover_moves_the_leader_and_writes_resume(patroni: Patroni, patroni_db: str) -> None:
    old = patroni.leader()
    assert old is not None
    write_through_multi_host_url(patroni, patroni_db, "before")
    new, seconds = patroni.switchover()
    report(f"switchover {old.name} -> {new.name}", seconds)
    assert new.name != old.name
    assert seconds < SWITCHOVER_BOUND
    assert write_through_multi_host_url(patroni, patroni_db, "after") == 2
    assert primaries_alive(patroni) == [new.name]  # the old leader may still be restarting as a replica
    patroni.wait_ready(60)
    assert primaries(patroni) == [new.name]


def test_killed_leader_postmaster_then_writes_resume(patroni: Patroni, patroni_db: str) -> None:
    patroni.wait_ready(60)
    killed = patroni.kill_leader()
    member, seconds = patroni.wait_writable(CRASH_BOUND)
    report(f"SIGKILL of {killed.name}'s postmaster, writable on {member.name}", seconds)
    assert write_through_multi_host_url(patroni, patroni_db, "after crash") == 1
    assert len(primaries_alive(patroni)) == 1


def primaries_alive(patroni: Patroni) -> list[str]:
    """Primaries among the members that answer (a crashed one may still be restarting)."""
    found = []
    for member in patroni.members:
        with contextlib.suppress(psycopg2.Error):
            if not member.in_recovery():
                found.append(member.name)
    return found
