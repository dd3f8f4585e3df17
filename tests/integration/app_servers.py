"""Run the examples under real servers (gunicorn, uvicorn) on loopback, and send them bursts of requests."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def request(url: str, method: str = "GET", timeout: float = 10.0, headers: dict[str, str] | None = None
            ) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
    """(status, body, headers); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(
        url, method=method, data=b"" if method == "POST" else None, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], base: str, log: Path, timeout: float = 60.0
) -> Iterator[None]:
    """Start ``command`` in its own process group; wait for ``/health/live``; stop the group at the end."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"{command[0]} exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                )
            with contextlib.suppress(OSError):
                if request(base + "/health/live", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{command[0]} did not answer within {timeout}s:\n{log.read_text()[-3000:]}"
                )
            time.sleep(0.2)
        yield
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, then SIGKILL after 15 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Burst:
    """What a burst of requests got back."""

    requests: int = 0
    errors: int = 0
    app_ok: int = 0  # successful application requests (each checks a connection out)
    samples: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def line(self, what: str) -> str:
        return f"{what}: {self.requests} requests, {self.errors} errors" + (
            f" (first: {self.samples[:3]})" if self.samples else "")


PLAN = (("POST", "/files"), ("GET", "/files"), ("GET", "/files"), ("GET", "/health/ready"))


def burst(base: str, total: int = 400, concurrency: int = 16) -> Burst:
    """``total`` requests (writes, reads, readiness) from ``concurrency`` threads; counts errors."""
    result = Burst()

    def one(index: int) -> None:
        method, path = PLAN[index % len(PLAN)]
        try:
            status, body, _ = request(base + path, method)
            ok = status < 300
            detail = f"{method} {path} -> {status} {body[:120]!r}"
        except OSError as exc:
            ok, detail = False, f"{method} {path} -> {type(exc).__name__}: {exc}"
        with result.lock:
            result.requests += 1
            if ok and path == "/files":
                result.app_ok += 1
            if not ok:
                result.errors += 1
                result.samples.append(detail)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(total)))
    return result


def metric(text: str, name: str) -> float:
    """The value of the first sample of ``name`` in an exposition text."""
    match = re.search(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
    if match is None:
        raise AssertionError(f"{name} not in the exposition:\n{text[:2000]}")
    return float(match.group(1))


def scrape_while(base: str, done: threading.Event, name: str, interval: float = 0.05) -> list[float]:
    """Scrape ``/metrics`` until ``done`` is set (at most 600 times); the values of ``name`` in order."""
    values: list[float] = []
    for _ in range(600):
        status, body, _ = request(base + "/metrics")
        assert status == 200, body
        values.append(metric(body.decode(), name))
        if done.wait(interval):
            break
    return values


REPORTED: list[str] = []  # printed in the terminal summary by tests/conftest.py


def report(line: str) -> None:
    """Keep ``line`` for the end of the run (the summary shows it whatever the capture mode)."""
    REPORTED.append(line)


def detailed(base: str) -> dict[str, object]:
    return dict(json.loads(request(base + "/health/detailed")[1]))
