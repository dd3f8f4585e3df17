"""health_app and HealthChecker without a server: settings validation, WSGI routing, JSON shapes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from api.db import connect
from api.db.cli import build_parser
from api.db.engines.state import state_of
from api.db.exceptions import ConfigurationError, MigrationDeclarationError
from api.db.health.checks import DatabaseHealth, HealthChecker, check_database_health
from api.db.health.wsgi import health_app


@pytest.fixture
def sqlite_db(tmp_path: Any) -> Iterator[Any]:
    database = connect(f"sqlite:///{tmp_path}/health.db", environ={})
    yield database
    database.close()


def call(app: Any, path: str, method: str = "GET", **environ: str) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(app({"REQUEST_METHOD": method, "PATH_INFO": path, **environ}, start_response))
    return seen["status"], seen["headers"], body


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("cache_ttl", -1),
        ("cache_ttl", float("nan")),
        ("timeout", 0),
        ("timeout", "1"),
        ("latency_threshold_ms", True),
    ],
)
def test_bad_settings_are_refused_with_their_name(sqlite_db: Any, setting: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=setting):
        HealthChecker(sqlite_db, **{setting: value})


def test_empty_token_and_bad_declarations_fail_when_the_app_is_built(sqlite_db: Any) -> None:
    with pytest.raises(ConfigurationError, match="token is empty"):
        health_app(sqlite_db, token="  ")
    with pytest.raises(MigrationDeclarationError):
        health_app(sqlite_db, [("same", lambda m: None), ("same", lambda m: None)])


def test_wsgi_routes_on_sqlite(sqlite_db: Any) -> None:
    app = health_app(sqlite_db, [("first", lambda m: None)], cache_ttl=0.0)
    assert call(app, "/health/live")[0] == "200 OK"
    status, _, body = call(app, "/health/ready")
    assert status == "503 Service Unavailable"
    expected = {"status": "not ready", "role": "standalone", "reasons": ["1 migration(s) pending"]}
    assert json.loads(body) == expected
    status, headers, body = call(app, "/health/ready", method="PUT")
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"
    assert call(app, "/")[0] == "404 Not Found"
    detailed = json.loads(call(app, "/health/detailed")[2])
    assert detailed["status"] == "degraded" and detailed["migrations"]["pending"] == ["first"]
    assert "error" not in detailed["database"] and "server_version" not in detailed["database"]
    app.close()


def test_an_internal_failure_is_a_500_without_the_error_text(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = health_app(sqlite_db)

    def broken(max_age: float | None = None) -> DatabaseHealth:
        # A bug inside the check, which no real server produces on demand: replaced here on purpose.
        raise RuntimeError("secret internals at /srv/app.py line 3")

    monkeypatch.setattr(app.checker, "check", broken)
    status, _, body = call(app, "/health/ready")
    assert status == "500 Internal Server Error" and json.loads(body) == {"status": "error"}


def test_metrics_without_prometheus_client_say_how_to_install_it(
    sqlite_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the import fails as if the extra were missing
    monkeypatch.setitem(sys.modules, "api.db.health.metrics", None)
    app = health_app(sqlite_db)
    status, _, body = call(app, "/metrics")
    assert status == "501 Not Implemented" and b"api-db[metrics]" in body
    assert call(app, "/health/live")[0] == "200 OK"


def test_latency_above_the_threshold_degrades(sqlite_db: Any) -> None:
    health = HealthChecker(sqlite_db, latency_threshold_ms=0.0, cache_ttl=0.0).check()
    assert health.status == "degraded" and health.ready
    assert health.reasons[0].startswith("latency ")


def test_one_shot_check_reuses_its_probe(sqlite_db: Any) -> None:
    first = check_database_health(sqlite_db)
    second = check_database_health(sqlite_db)
    assert first.status == second.status == "healthy" and second.checked_at >= first.checked_at
    checkers = state_of(sqlite_db).health_checkers
    assert len(checkers) == 1 and next(iter(checkers.values())).checks_total == 2


def test_serve_command_defaults_to_loopback() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.cache_ttl, args.expose_details) == ("127.0.0.1", 8080, 5.0, False)
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--port", "9000", "--expose-details"])
    assert (args.host, args.port, args.expose_details) == ("0.0.0.0", 9000, True)


def test_server_version_text() -> None:
    from api.db.health.checks import _version_text

    assert _version_text(180001) == "18.1" and _version_text(90624) == "9.6.24"
    assert _version_text((10, 11, 6)) == "10.11.6" and _version_text(None) is None


def test_mounted_under_a_prefix_it_routes_on_path_info(sqlite_db: Any) -> None:
    # What werkzeug's DispatcherMiddleware and other WSGI mounts do: the prefix moves to SCRIPT_NAME.
    app = health_app(sqlite_db)
    assert call(app, "/health/live", SCRIPT_NAME="/ops")[0] == "200 OK"
    assert call(app, "/ops/health/live")[0] == "404 Not Found"
