"""Test harness: engine parametrization, a fresh database per test, REQUIRE_ENGINES.

A test that asks for ``engine``, ``db_url`` or ``db`` runs once per engine:
``sqlite``, ``postgres`` and ``mysql`` by default, or those named with
``@pytest.mark.engines("pgvector", ...)``. Each run gets its own database,
dropped afterwards. An unreachable engine skips with the reason, unless
``REQUIRE_ENGINES`` names it: then the test fails.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The integration tests' helper modules (boot_child, preview_app), importable from every area's folder.
sys.path.insert(0, str(Path(__file__).resolve().parent / "integration"))

import engines as engine_registry  # noqa: E402
from engines import DEFAULT_ENGINES, Engine  # noqa: E402

ENGINE_FIXTURES = {"engine", "db_url", "db"}


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = [f"REQUIRE_ENGINES={os.environ.get('REQUIRE_ENGINES', '') or '(none)'}"]
    for name in engine_registry.ALL_ENGINES:
        eng = engine_registry.get_engine(name)
        if eng.available:
            lines.append(f"engine {name}: {eng.version} [{eng.source}]")
        else:
            lines.append(f"engine {name}: UNAVAILABLE ({eng.reason})")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not ENGINE_FIXTURES & set(metafunc.fixturenames):
        return
    marker = metafunc.definition.get_closest_marker("engines")
    names = tuple(marker.args) if marker else DEFAULT_ENGINES
    metafunc.parametrize("engine_name", names, ids=list(names), scope="function")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Lines the integration tests asked to show (request and error counts of the server runs)."""
    reported = sys.modules.get("app_servers")
    for line in getattr(reported, "REPORTED", []):
        terminalreporter.write_line(f"[apps] {line}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    engine_registry.shutdown()


@pytest.fixture
def engine(engine_name: str) -> Engine:
    """The discovered engine; skipped (or failed, if required) when unreachable."""
    eng = engine_registry.get_engine(engine_name)
    if not eng.available:
        message = f"engine {engine_name} unavailable: {eng.reason}"
        if engine_name in engine_registry.required_engines():
            pytest.fail(f"{message} (required by REQUIRE_ENGINES)", pytrace=False)
        pytest.skip(message)
    return eng


@pytest.fixture
def db_url(engine: Engine) -> Iterator[str]:
    """URL of a fresh, empty database on ``engine``, dropped after the test."""
    url = engine.create_database()
    try:
        yield url
    finally:
        engine.drop_database(url)


@pytest.fixture
def db(db_url: str) -> Iterator[Any]:
    """An api.db database on the fresh database; every pooled connection closed afterwards."""
    from api.db import connect

    database = connect(db_url)
    try:
        yield database
    finally:
        close_all = getattr(database, "close_all", None)
        if close_all is not None:
            close_all()
        else:
            database.close()
