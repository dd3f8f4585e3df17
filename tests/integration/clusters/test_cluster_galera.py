"""3-node MariaDB Galera: writes replicate to every node, the cluster has 3 members, desync is visible."""

from __future__ import annotations

import contextlib

import pytest

from clusters import Galera, wait_until


def test_row_written_on_node_1_is_read_on_nodes_2_and_3(galera: Galera, galera_db: str) -> None:
    galera.sql(1, "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20))", galera_db)
    galera.sql(1, "INSERT INTO t VALUES (1, 'from n1')", galera_db)
    for node in (2, 3):
        with contextlib.closing(galera.connect(node, galera_db)) as conn, conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")  # read after every write certified so far
            cur.execute("SELECT v FROM t WHERE id = 1")
            assert cur.fetchall() == (("from n1",),)


def test_every_node_sees_a_cluster_of_three(galera: Galera) -> None:
    for node in (1, 2, 3):
        assert galera.status(node, "wsrep_cluster_size") == "3"
        assert galera.status(node, "wsrep_ready") == "ON"
        assert galera.status(node, "wsrep_local_state_comment") == "Synced"
    assert len(galera.urls) == 3
    assert all(url.startswith(f"mysql://{galera.user}@127.0.0.1:") for url in galera.urls)


@pytest.mark.cluster("galera")
def test_desync_shows_then_clears(galera: Galera) -> None:
    galera.desync(2)
    try:
        state = wait_until(lambda: galera.status(2, "wsrep_local_state_comment") != "Synced"
                           and galera.status(2, "wsrep_local_state_comment"), 10)
        assert state and state != "Synced"
    finally:
        galera.resync(2)
    assert galera.status(2, "wsrep_local_state_comment") == "Synced"
    assert galera.status(1, "wsrep_local_state_comment") == "Synced"
