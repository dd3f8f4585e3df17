"""The Flask example under gunicorn (4 workers, with and without --preload) and the FastAPI example under
uvicorn (2 workers), on PostgreSQL and MariaDB: a burst of requests with no error, and /metrics totals
that only grow from scrape to scrape although each scrape reaches any worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from app_servers import (
    BIN,
    Burst,
    burst,
    detailed,
    free_port,
    metric,
    report,
    request,
    running,
    scrape_while,
)

pytestmark = [pytest.mark.engines("postgres", "mysql"), pytest.mark.timeout(240)]

BURST = 400
ACQUISITIONS = "api_db_pool_acquisitions_total"


def _exercise(base: str, what: str) -> None:
    """Burst while scraping; assert no error, monotonic counters, and totals covering every worker."""
    done = threading.Event()
    results: list[Burst] = []
    worker = threading.Thread(target=_burst_until_done, args=(base, done, results), name="burst")
    worker.start()
    try:
        scraped = scrape_while(base, done, ACQUISITIONS)
    finally:
        worker.join(timeout=180)
    result = results[0]
    time.sleep(1.5)  # every worker syncs its counters within a second
    final = metric(request(base + "/metrics")[1].decode(), ACQUISITIONS)
    scraped.append(final)
    report(result.line(what) + f"; {ACQUISITIONS} over {len(scraped)} scrapes: {scraped[0]:g} .. {final:g}")
    assert result.errors == 0, result.line(what)
    assert result.requests == BURST
    backwards = [(a, b) for a, b in zip(scraped, scraped[1:]) if b < a]
    assert not backwards, f"{ACQUISITIONS} ran backwards between scrapes: {backwards[:5]} in {scraped}"
    assert final >= result.app_ok, (
        f"{ACQUISITIONS}={final} < {result.app_ok} application requests: not summed"
    )


def _burst_until_done(base: str, done: threading.Event, results: list[Burst]) -> None:
    try:
        results.append(burst(base, BURST))
    finally:
        done.set()


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_flask_under_gunicorn(db_url: str, engine_name: str, preload: bool, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    command = [str(BIN / "gunicorn"), "-w", "4", "-b", f"127.0.0.1:{port}", "-c", "examples/gunicorn_conf.py"]
    command += ["--preload"] if preload else []
    command.append("examples.flask_app:create_app()")
    env = {"DATABASE_URL": db_url, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with running(command, env, base, tmp_path / "gunicorn.log"):
        health = detailed(base)
        assert health["ready"] is True, health
        _exercise(base, f"gunicorn -w 4 {'--preload' if preload else '(no preload)'} flask on {engine_name}")
    log = (tmp_path / "gunicorn.log").read_text()
    assert "WORKER TIMEOUT" not in log and "Traceback" not in log, log[-3000:]


def test_fastapi_under_uvicorn(db_url: str, engine_name: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    command = [str(BIN / "uvicorn"), "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warning", "examples.fastapi_app:app"]  # fmt: skip
    env = {"DATABASE_URL": db_url, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    with running(command, env, base, tmp_path / "uvicorn.log"):
        deadline = time.monotonic() + 30
        while not detailed(base).get("ready") and time.monotonic() < deadline:
            time.sleep(0.3)  # the second worker may still be in its lifespan
        assert detailed(base)["ready"] is True
        _exercise(base, f"uvicorn --workers 2 fastapi on {engine_name}")
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log, log[-3000:]
