"""Cluster topologies for the tests in this directory: one start of each per session, on demand.

Fixtures ``pgbouncer_transaction``, ``pgbouncer_session``, ``galera`` and ``patroni`` (session
scope) start their topology the first time a collected test asks for it, and stop it at the end
of the session (``tests/clusters.py``). ``@pytest.mark.cluster("galera")`` asks for one by name;
a test using a cluster fixture carries that marker, so ``-m "not cluster"`` leaves them out.

A topology that cannot start (a Debian package missing, a failed start) skips its tests with the
reason, unless ``REQUIRE_CLUSTERS`` (comma list: pgbouncer, galera, patroni) names it: then they fail.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest

import clusters
from clusters import Galera, Patroni, PgBouncer

log = logging.getLogger("tests.clusters")

CLUSTER_FIXTURES = tuple(clusters.STARTERS)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster(name): needs the cluster topology fixture called name")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        marked = {name for mark in item.iter_markers("cluster") for name in mark.args}
        for name in CLUSTER_FIXTURES:
            if name in getattr(item, "fixturenames", ()) and name not in marked:
                item.add_marker(pytest.mark.cluster(name))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if clusters.START_TIMES:
        times = ", ".join(f"{name} {secs:.2f} s" for name, secs in clusters.START_TIMES.items())
        terminalreporter.write_line(f"cluster start times: {times}")


REQUIRED_SUFFIX = "(required by REQUIRE_CLUSTERS)"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A required topology that cannot start is reported as a test failure, not a setup error."""
    outcome = yield
    excinfo = call.excinfo
    if call.when == "setup" and excinfo is not None and excinfo.errisinstance(pytest.fail.Exception):
        if str(excinfo.value).endswith(REQUIRED_SUFFIX):
            outcome.get_result().when = "call"


def unavailable(name: str, reason: str) -> None:
    """Skip, or fail when ``REQUIRE_CLUSTERS`` names the topology."""
    kind = name.split("_")[0]
    message = f"cluster {name} unavailable: {reason}"
    if kind in clusters.required_clusters():
        pytest.fail(f"{message} {REQUIRED_SUFFIX}", pytrace=False)
    pytest.skip(message)


def start_cluster(name: str, request: pytest.FixtureRequest) -> Any:
    """Start topology ``name`` once, stopped when the session's fixtures are torn down."""
    missing = clusters.missing_packages(name.split("_")[0])
    if missing:
        unavailable(name, f"Debian package(s) not installed: {', '.join(missing)}")
    stack = contextlib.ExitStack()
    request.addfinalizer(stack.close)
    failure = ""
    try:
        topology = stack.enter_context(clusters.STARTERS[name]())
    except Exception as exc:  # any start failure: its message names the log file
        failure = f"start failed: {type(exc).__name__}: {exc}"
    if failure:
        unavailable(name, failure)
    log.info("cluster %s started in %.2f s", name, topology.start_seconds)
    return topology


@pytest.fixture(scope="session")
def pgbouncer_transaction(request: pytest.FixtureRequest) -> PgBouncer:
    """PgBouncer, pool_mode=transaction, in front of 127.0.0.1:5432."""
    return start_cluster("pgbouncer_transaction", request)


@pytest.fixture(scope="session")
def pgbouncer_session(request: pytest.FixtureRequest) -> PgBouncer:
    """PgBouncer, pool_mode=session, in front of 127.0.0.1:5432."""
    return start_cluster("pgbouncer_session", request)


@pytest.fixture(scope="session")
def galera(request: pytest.FixtureRequest) -> Galera:
    """A 3-node MariaDB Galera cluster."""
    return start_cluster("galera", request)


@pytest.fixture(scope="session")
def patroni(request: pytest.FixtureRequest) -> Patroni:
    """A 3-member Patroni cluster (PostgreSQL 15) with one etcd."""
    return start_cluster("patroni", request)


@pytest.fixture(autouse=True)
def _cluster_marker(request: pytest.FixtureRequest) -> None:
    """Start the topologies named by ``@pytest.mark.cluster(...)``."""
    for mark in request.node.iter_markers("cluster"):
        for name in mark.args:
            if name not in CLUSTER_FIXTURES:
                raise ValueError(f"unknown cluster {name!r}; known: {', '.join(CLUSTER_FIXTURES)}")
            request.getfixturevalue(name)


@pytest.fixture
def galera_db(galera: Galera) -> Iterator[str]:
    """A fresh database on the Galera cluster (all nodes), dropped afterwards."""
    name = galera.create_database()
    try:
        yield name
    finally:
        galera.drop_database(name)


@pytest.fixture
def patroni_db(patroni: Patroni) -> Iterator[str]:
    """A fresh database on the Patroni leader, dropped afterwards."""
    name = patroni.create_database()
    try:
        yield name
    finally:
        patroni.drop_database(name)
