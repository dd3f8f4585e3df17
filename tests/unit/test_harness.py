"""The harness itself: an unreachable engine skips with its reason, or fails when REQUIRE_ENGINES names it.

Each case runs pytest in a subprocess against a MySQL URL whose port is closed,
with discovery limited to that URL, so the outcome does not depend on the
services this machine happens to run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_engine_test(require: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        TEST_ENGINE_SOURCES="env",
        TEST_MYSQL_URL=f"mysql://root:hunter2@127.0.0.1:{closed_port()}/x",
        REQUIRE_ENGINES=require,
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rsf", "-p", "no:cacheprovider",
         "tests/integration/engines/test_engines.py::test_engine_is_really_used[mysql]"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_unreachable_engine_skips_with_its_reason() -> None:
    result = run_engine_test(require="")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "1 skipped" in result.stdout
    assert "engine mysql unavailable: TEST_MYSQL_URL: OperationalError" in result.stdout
    assert "local: not tried" in result.stdout
    assert "hunter2" not in result.stdout


def test_required_engine_that_is_unreachable_fails() -> None:
    result = run_engine_test(require="mysql")
    assert result.returncode == 1, result.stdout[-2000:]
    assert "1 error" in result.stdout  # pytest.fail in a fixture counts as an error: the run fails
    assert "required by REQUIRE_ENGINES" in result.stdout


def test_unknown_names_in_the_knobs_are_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    import engines

    monkeypatch.setenv("REQUIRE_ENGINES", "postgres,oracle")
    with pytest.raises(ValueError, match="oracle"):
        engines.required_engines()
    monkeypatch.setenv("TEST_ENGINE_SOURCES", "env,cloud")
    with pytest.raises(ValueError, match="cloud"):
        engines.discovery_sources()
