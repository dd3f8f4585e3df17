"""``health_app``: a WSGI app with Kubernetes probes and Prometheus metrics, and a threaded server for it.

=====================  ==========================================================
``GET /health/live``   200 while the process serves requests; never touches the database
``GET /health/ready``  200 when the database answers, nothing is pending or failed and
                       the pool is not exhausted; 503 with short reasons otherwise
``GET /health/detailed`` every component as JSON (200, or 503 when unhealthy);
                       ``Authorization: Bearer <token>`` when a token is set
``GET /metrics``       Prometheus exposition (:mod:`api.db.health.metrics`)
=====================  ==========================================================

``HEAD`` is accepted wherever ``GET`` is; other methods get 405, other paths 404. Paths
are read from ``PATH_INFO``, so the application mounts under any prefix of a WSGI
framework (Flask/werkzeug ``DispatcherMiddleware``, Django URL routing to a WSGI view).
No response carries a password, a DSN or a stack trace; without ``expose_details``
none carries error text, host names or server versions either.
"""

from __future__ import annotations

import hmac
import json
import logging
import signal
import socketserver
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import peewee

from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError
from api.db.health.checks import UNHEALTHY, HealthChecker
from api.db.migrate.declarations import MigrationLike
from api.db.redact import redact_text

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]

LIVE, READY, DETAILED, METRICS = "/health/live", "/health/ready", "/health/detailed", "/metrics"
ROUTES = (LIVE, READY, DETAILED, METRICS)
ALLOWED_METHODS = ("GET", "HEAD")
_REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}  # fmt: skip


class HealthApp:
    """A WSGI application serving ``/health/live``, ``/health/ready``, ``/health/detailed`` and ``/metrics``.

    ``cache_ttl``: seconds a health result is reused (one check refreshes it, however
    many requests arrive). ``expose_details``: include error text and versions in
    ``/health/detailed``. ``token``: require ``Authorization: Bearer <token>`` there.
    ``timeout`` / ``latency_threshold_ms``: see :class:`api.db.health.checks.HealthChecker`.
    ``ready_on_replica``: whether ``/health/ready`` answers 200 on a replica (the role is reported anyway).
    """

    def __init__(
        self,
        db: peewee.Database,
        migrations: Iterable[MigrationLike] | None = None,
        cache_ttl: float = 5.0,
        expose_details: bool = False,
        token: str | None = None,
        *,
        timeout: float | None = None,
        latency_threshold_ms: float | None = None,
        ready_on_replica: bool = True,
    ) -> None:
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise ConfigurationError(
                "token is empty: give a secret string, or None to leave /health/detailed open"
            )
        options: dict[str, Any] = {}
        if timeout is not None:
            options["timeout"] = timeout
        if latency_threshold_ms is not None:
            options["latency_threshold_ms"] = latency_threshold_ms
        options["ready_on_replica"] = ready_on_replica
        self.checker = HealthChecker(db, migrations, cache_ttl=cache_ttl, **options)
        self.expose_details = bool(expose_details)
        self._token = token.encode() if token is not None else None
        self._metrics: Any = None
        self._metrics_missing: str | None = None
        try:
            from api.db.health.metrics import MetricsEndpoint
        except ImportError as exc:  # the metrics extra is optional; /metrics says how to get it
            self._metrics_missing = (
                f"{exc.name or 'prometheus_client'} is not installed: pip install 'api-db[metrics]'"
            )
            logger.warning("/metrics disabled: %s", self._metrics_missing)
        else:
            self._metrics = MetricsEndpoint(self.checker, details=self.expose_details)

    def close(self) -> None:
        """Close the health probe's own connection (and stop the metrics sync of multiprocess mode)."""
        if self._metrics is not None:
            self._metrics.close()
        self.checker.close()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        status, headers, body = self.respond(method, str(environ.get("PATH_INFO", "") or "/"), environ)
        start_response(f"{status} {_REASONS[status]}", headers)
        return [] if method == "HEAD" else [body]

    def respond(
        self, method: str, path: str, environ: dict[str, Any]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Status, headers and body for one request (``environ`` has the HTTP_* headers); shared with ASGI."""
        if len(path) > 1:
            path = path.rstrip("/")
        try:
            if path not in ROUTES:
                status, headers, body = _json(404, {"status": "not found", "paths": list(ROUTES)})
            elif method not in ALLOWED_METHODS:
                status, headers, body = _json(
                    405, {"status": "method not allowed", "allowed": list(ALLOWED_METHODS)}
                )
                headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
            else:
                status, headers, body = self._route(path, environ)
        except Exception as exc:  # answer 500 without the error text; the log has it, classified
            info = classify_error(exc)
            logger.error("health endpoint %s failed (%s): %s", path, info.category.value, info.message)
            status, headers, body = _json(500, {"status": "error"})
        return status, headers, body

    def _route(self, path: str, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        if path == LIVE:
            return _json(200, {"status": "alive"})
        if path == READY:
            health = self.checker.check()
            role = (health.role or {}).get("role", "unknown")
            if health.ready:
                return _json(200, {"status": "ready", "role": role})
            return _json(503, {"status": "not ready", "role": role, "reasons": health.reasons})
        if path == DETAILED:
            if self._token is not None and not self._authorized(environ):
                status, headers, body = _json(401, {"status": "unauthorized"})
                headers.append(("WWW-Authenticate", 'Bearer realm="api.db health"'))
                return status, headers, body
            health = self.checker.check()
            data = health.to_dict(details=self.expose_details)
            data["uptime_seconds"] = round(self.checker.uptime_seconds, 3)
            return _json(503 if health.status == UNHEALTHY else 200, data)
        if self._metrics is None:
            return _json(501, {"status": "metrics unavailable", "reason": self._metrics_missing})
        output, content_type = self._metrics.render(environ.get("HTTP_ACCEPT"))
        output = redact_text(output.decode()).encode()  # label values (pool targets) never carry a secret
        return 200, [("Content-Type", content_type), ("Cache-Control", "no-store"),
                     ("Content-Length", str(len(output)))], output  # fmt: skip

    def _authorized(self, environ: dict[str, Any]) -> bool:
        assert self._token is not None
        scheme, _, credentials = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), self._token)


def _json(status: int, data: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    body = redact_text(json.dumps(data, separators=(",", ":"), sort_keys=True)).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Cache-Control", "no-store"),
        ("Content-Length", str(len(body))),
    ]
    return status, headers, body


# The documented entry point: health_app(db, migrations=None, cache_ttl=5.0, expose_details=False,
# token=None).
health_app = HealthApp


# ---------------------------------------------------------------- server


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    """``wsgiref``'s server, one thread per connection: for tests and embedding; unbounded, so
    ``python -m api.db serve`` uses :func:`make_bounded_server` instead."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # the default of 5 drops connections when many probes arrive at once


class _LoggingHandler(WSGIRequestHandler):
    """Request lines go to the ``api.db.health.wsgi`` logger (DEBUG), not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's parameter name
        logger.debug("%s %s", self.address_string(), format % args)


def make_health_server(app: Any, host: str = "127.0.0.1", port: int = 8080) -> ThreadingWSGIServer:
    """A threaded ``wsgiref`` server for ``app`` bound to ``host:port`` (0: any free port); not started."""
    server = make_server(host, port, app, server_class=ThreadingWSGIServer, handler_class=_LoggingHandler)
    assert isinstance(server, ThreadingWSGIServer)
    return server


def run_until_stopped(server: ThreadingWSGIServer) -> None:
    """``server.serve_forever()`` until Ctrl-C or, from the main thread, SIGTERM (a container stop)."""
    previous: Any = None
    if threading.current_thread() is threading.main_thread():

        def on_sigterm(signum: int, frame: Any) -> None:
            # shutdown() waits for serve_forever() to return: call it from another thread.
            threading.Thread(target=server.shutdown, name="api.db-health-shutdown", daemon=True).start()

        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C is the way to stop the server, not an error
        logger.info("health server on %s:%s stopped by Ctrl-C", *server.server_address[:2])
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------- bounded server (python -m api.db serve)


@dataclass(frozen=True)
class ServeLimits:
    """The bounds of the probe server: worker threads, open connections, idle time, queue, header size."""

    threads: int = 4  # requests handled at once; idle or slow clients hold no thread
    connection_limit: int = 2000  # open connections; past it the server stops accepting until some close
    channel_timeout: float = 10.0  # seconds a connection may sit idle or half-sent before it is closed
    backlog: int = 2048  # connections the kernel queues while the server is at its limit
    max_request_header_size: int = 8192  # bytes of request line and headers; more gets 431
    shutdown_timeout: float = 2.0  # seconds SIGTERM waits for requests in progress

    def __post_init__(self) -> None:
        for name in ("threads", "connection_limit", "backlog", "max_request_header_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(
                    f"serve limit {name}={getattr(self, name)!r}: give a whole number >= 1"
                )
        for name in ("channel_timeout", "shutdown_timeout"):
            if not float(getattr(self, name)) > 0:
                raise ConfigurationError(f"serve limit {name}={getattr(self, name)!r}: give seconds > 0")


def _raise_file_limit(needed: int) -> None:
    """Raise the soft open-file limit towards ``needed`` (never above the hard limit)."""
    try:
        import resource
    except ImportError:  # not on this platform: the operating system's limit applies
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        logger.info("open-file limit raised from %s to %s for the probe server", soft, target)


def make_bounded_server(app: Any, host: str = "127.0.0.1", port: int = 8080,
                        limits: ServeLimits | None = None) -> Any:
    """A ``waitress`` server for ``app`` with ``limits`` on ``host:port`` (0: any free port), not started."""
    limits = limits or ServeLimits()
    try:
        from waitress.server import create_server
    except ImportError:
        raise ConfigurationError("the probe server needs waitress, which is not installed: "
                                 "pip install 'api-db[serve]'") from None  # fmt: skip
    _raise_file_limit(limits.connection_limit + 64)
    return create_server(
        app, host=host, port=port, threads=limits.threads, connection_limit=limits.connection_limit,
        channel_timeout=limits.channel_timeout, cleanup_interval=max(1, int(limits.channel_timeout // 2)),
        backlog=limits.backlog, max_request_header_size=limits.max_request_header_size,
        asyncore_use_poll=True, ident="api.db", expose_tracebacks=False,
    )  # fmt: skip


def serve_until_stopped(server: Any, limits: ServeLimits | None = None) -> None:
    """Run a :func:`make_bounded_server` server until Ctrl-C or SIGTERM (main thread only), then close it."""
    limits = limits or ServeLimits()
    stop = threading.Event()
    previous: Any = None
    if threading.current_thread() is threading.main_thread():
        # A flag, not an exception: raised inside a channel's handler, waitress would catch it as that
        # channel's error and go on serving.
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        while not stop.is_set():  # one poll at a time (at most asyncore_loop_timeout), then look at the flag
            server.asyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=_channels(server),
                                 use_poll=True,
                                 count=1)  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C: the other way to stop
        stop.set()
    finally:
        logger.info("probe server stopping")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        server.task_dispatcher.shutdown(timeout=limits.shutdown_timeout)
        server.asyncore.close_all(_channels(server))


def _channels(server: Any) -> Any:
    """The socket map of a waitress server (one listening socket, or several)."""
    return server.map if hasattr(server, "map") else server._map


def bound_address(server: Any) -> tuple[str, int]:
    """The host and port a :func:`make_bounded_server` server listens on (the first, when several)."""
    if hasattr(server, "effective_port"):
        return str(server.effective_host), int(server.effective_port)
    first = server.effective_listen[0]
    return str(first[0]), int(first[1])
