"""``python -m api.db serve`` with 1,500 idle or slow clients: fast live, bounded memory, SIGTERM stops it."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
CLIENTS = 1500
LIVE_BUDGET_S = 0.1  # the median answer, as the issue asks
# A single answer may wait for a time slice of a loaded 2-core CI machine (another test run shares it);
# what must never happen is an answer queued behind the slow clients, which takes seconds or times out.
LIVE_CEILING_S = 1.0
STOP_BUDGET_S = 5.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _live(port: int) -> tuple[int, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/health/live")
        response = conn.getresponse()
        response.read()
        return response.status, time.monotonic() - started
    finally:
        conn.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "api.db", "--database", f"sqlite:///{tmp_path / 'probe.db'}", "serve",
            "--port", str(port), "--channel-timeout", "60", "--connection-limit", "2000"]  # fmt: skip
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert child.stdout is not None
        first = child.stdout.readline()
        assert "serving health endpoints" in first, first
        yield child, port
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(10)


def _open_slow_clients(port: int, count: int) -> list[socket.socket]:
    """Half connect and send nothing; half send a partial request head, one header at a time."""
    clients: list[socket.socket] = []
    for i in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if i % 2:
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        clients.append(sock)
    return clients


def test_live_answers_fast_under_slow_clients_and_sigterm_stops(
    server: tuple[subprocess.Popen[str], int],
) -> None:
    child, port = server
    status, _ = _live(port)
    assert status == 200
    rss_before = _rss_kib(child.pid)
    clients = _open_slow_clients(port, CLIENTS)
    try:
        for round_number in range(3):  # the slow half trickles one more header line per round
            for sock in clients[1::2]:
                sock.sendall(f"X-Slow-{round_number}: 1\r\n".encode())
            time.sleep(0.2)
        latencies = [_live(port)[1] for _ in range(20)]
        rss_loaded = _rss_kib(child.pid)
        assert child.poll() is None
        started = time.monotonic()
        child.send_signal(signal.SIGTERM)
        child.wait(STOP_BUDGET_S + 5)
        stopped = time.monotonic() - started
    finally:
        for sock in clients:
            sock.close()
    worst = max(latencies)
    median = sorted(latencies)[len(latencies) // 2]
    print(f"\n{CLIENTS} slow clients: /health/live p50 {median * 1e3:.1f} ms, "
          f"max {worst * 1e3:.1f} ms; RSS {rss_before / 1024:.1f} MiB idle, {rss_loaded / 1024:.1f} MiB "
          f"loaded; SIGTERM stopped it in {stopped:.2f} s")  # fmt: skip
    assert median < LIVE_BUDGET_S, (
        f"/health/live took {median * 1e3:.0f} ms (median) with {CLIENTS} slow clients"
    )
    assert worst < LIVE_CEILING_S, f"/health/live took {worst * 1e3:.0f} ms once with {CLIENTS} slow clients"
    assert rss_loaded - rss_before < 64 * 1024, "the server's memory grew by more than 64 MiB"
    assert stopped < STOP_BUDGET_S, f"SIGTERM took {stopped:.1f} s"
    assert child.returncode == 0
