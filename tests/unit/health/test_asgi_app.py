"""health_asgi_app without a server: the same routes as the WSGI app, lifespan, mounting, fallback;
OpenMetrics negotiation; migrations "unknown" while the database is down; migrate_db_async."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.db import connect, health_app, health_asgi_app, migrate_db_async, migration_status
from examples.app_migrations import MIGRATIONS


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Any]:
    database = connect(f"sqlite:///{tmp_path}/asgi.db", environ={})
    yield database
    database.close()


async def _call(app: Any, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                root_path: str = "") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": method, "path": path, "root_path": root_path,
             "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    headers_out = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers_out, b"".join(m.get("body", b"") for m in sent[1:])


def call(app: Any, path: str, **options: Any) -> tuple[int, dict[str, str], bytes]:
    return asyncio.run(_call(app, path, **options))


def test_asgi_routes_answer_like_the_wsgi_app(sqlite_db: Any) -> None:
    app = health_asgi_app(sqlite_db, MIGRATIONS, cache_ttl=0.0)
    try:
        assert call(app, "/health/live")[0] == 200
        status, _, body = call(app, "/health/ready")
        assert status == 503 and "pending" in json.loads(body)["reasons"][0]
        asyncio.run(migrate_db_async(sqlite_db, MIGRATIONS))
        assert call(app, "/health/ready")[0] == 200
        detailed = json.loads(call(app, "/health/detailed")[2])
        assert detailed["migrations"]["applied"] == len(MIGRATIONS) and detailed["uptime_seconds"] >= 0
        assert call(app, "/nope")[0] == 404
        assert call(app, "/health/live", method="POST")[0] == 405
        assert call(app, "/health/live", method="HEAD")[2] == b""
    finally:
        app.close()
    assert all(line.status == "success" for line in migration_status(sqlite_db, MIGRATIONS))


def test_mounted_under_a_prefix_the_urls_keep_health(sqlite_db: Any) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    outer = FastAPI()
    probes = health_asgi_app(sqlite_db, cache_ttl=0.0)
    outer.mount("/ops", probes)
    with TestClient(outer) as client:
        assert client.get("/ops/health/live").status_code == 200
        assert client.get("/ops/metrics").status_code == 200
        assert client.get("/ops/live").status_code == 404  # the app's own paths start with /health
    probes.close()


def test_fallback_serves_the_probes_at_the_root_and_hands_on_the_rest(sqlite_db: Any) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    events: list[str] = []
    api = FastAPI(
        on_startup=[lambda: events.append("startup")], on_shutdown=[lambda: events.append("shutdown")]
    )

    @api.get("/hello")
    def hello() -> dict[str, str]:
        return {"hello": "world"}

    app = health_asgi_app(sqlite_db, cache_ttl=0.0, fallback=api)
    with TestClient(app) as client:
        assert client.get("/health/live").json() == {"status": "alive"}
        assert client.get("/hello").json() == {"hello": "world"}
    assert events == ["startup", "shutdown"]


def test_openmetrics_is_negotiated(sqlite_db: Any) -> None:
    app = health_app(sqlite_db, cache_ttl=0.0)
    try:
        status, headers, body = app.respond(
            "GET", "/metrics", {"HTTP_ACCEPT": "application/openmetrics-text"}
        )
        assert status == 200 and dict(headers)["Content-Type"].startswith("application/openmetrics-text")
        assert body.rstrip().endswith(b"# EOF")
        plain = dict(app.respond("GET", "/metrics", {})[1])["Content-Type"]
        assert plain == "text/plain; version=0.0.4; charset=utf-8"
    finally:
        app.close()


def test_migrations_are_unknown_while_the_database_is_down(tmp_path: Path) -> None:
    down = connect("postgresql://u@127.0.0.1:1/x", environ={}, min_connections=0, retry_max_attempts=1)
    app = health_app(down, MIGRATIONS, cache_ttl=0.0)
    try:
        status, _, body = app.respond("GET", "/health/detailed", {})
        migrations = json.loads(body)["migrations"]
        assert status == 503 and migrations["state"] == "unknown"
        assert migrations["pending"] is None and migrations["applied"] is None
        metrics = app.respond("GET", "/metrics", {})[2].decode()
        values = {s.name: s.value for f in text_string_to_metric_families(metrics) for s in f.samples}
        assert math.isnan(values["api_db_migrations_pending"]) and math.isnan(
            values["api_db_migrations_applied"]
        )
        assert values["api_db_up"] == 0
    finally:
        app.close()
        down.close_all()


def test_migrate_db_async_on_a_pwasyncio_database(tmp_path: Path) -> None:
    from playhouse.pwasyncio import AsyncSqliteDatabase

    async def boot(db: Any) -> tuple[Any, Any]:
        first = await migrate_db_async(db, MIGRATIONS)
        again = await migrate_db_async(db, MIGRATIONS)
        await db.close_pool()
        return first, again

    first, again = asyncio.run(boot(AsyncSqliteDatabase(str(tmp_path / "aio.db"))))
    assert len(first.applied) == len(MIGRATIONS) and not again.applied
