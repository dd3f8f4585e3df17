"""A pool used before fork(): each child drops the inherited connections unclosed and opens its own."""

from __future__ import annotations

import multiprocessing
import os
import socket
from typing import Any

import pytest

pytestmark = pytest.mark.engines("postgres", "mysql")


def _session_sql(db: Any) -> str:
    from api.db.engines import engine_for

    return (
        "SELECT pg_backend_pid()"
        if engine_for(db).app_name_param == "application_name"
        else "SELECT CONNECTION_ID()"
    )


def _child(db: Any, queue: Any) -> None:
    try:
        ids = {db.execute_sql(_session_sql(db)).fetchone()[0] for _ in range(20)}
        db.close()
        queue.put(("ok", sorted(ids), None, db.counters.acquisitions))
    except Exception as exc:  # reported to the parent, which fails the test with it
        queue.put(("error", repr(exc), None, 0))


def test_forked_children_open_their_own_connections(db: Any) -> None:
    # this thread keeps it open across the fork
    parent_session = db.execute_sql(_session_sql(db)).fetchone()[0]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    children = [context.Process(target=_child, args=(db, queue)) for _ in range(3)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    answers = [queue.get(timeout=5) for _ in children]
    assert all(answer[0] == "ok" for answer in answers), answers
    child_sessions = [answer[1] for answer in answers]
    for sessions in child_sessions:
        assert len(sessions) == 1 and sessions[0] != parent_session, (parent_session, child_sessions)
    assert len({s[0] for s in child_sessions}) == len(children)
    assert all(answer[3] >= 1 for answer in answers)  # each child counts its own checkouts from zero
    # The parent's session survived: no terminate message was sent on its socket.
    assert db.execute_sql(_session_sql(db)).fetchone()[0] == parent_session
    assert [child.exitcode for child in children] == [0, 0, 0]


def test_session_name_has_host_and_pid(db: Any) -> None:
    from api.db.engines import engine_for

    param = engine_for(db).app_name_param
    assert param is not None
    assert db.connect_params[param].endswith(f"@{socket.gethostname()}:{os.getpid()}"[-40:])


@pytest.mark.engines("postgres")
def test_the_server_sees_host_and_pid_in_application_name(db: Any) -> None:
    name = db.execute_sql(
        "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    ).fetchone()[0]
    assert name == f"api.db@{socket.gethostname()}:{os.getpid()}"[:63] or name.endswith(f":{os.getpid()}")
