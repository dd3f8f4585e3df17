"""``health_asgi_app``: the probes and metrics of :mod:`api.db.health.wsgi` as a native ASGI application.

The routes, status rules and responses are those of :class:`~api.db.health.wsgi.HealthApp`
(``/health/live``, ``/health/ready``, ``/health/detailed``, ``/metrics``), shared through its
``respond()``. ``/health/live`` answers on the event loop; the others run in a worker thread
(``asyncio.to_thread``), so a check waiting for a hung database never blocks the loop.

Paths already start with ``/health``: mounted under a prefix (``app.mount("/ops", probes)``) the URLs
are ``/ops/health/live`` ... ``/ops/metrics``. With ``fallback=`` it serves its four paths at the root
and hands every other request (and the lifespan) to the given application: ``/health/live`` and
``/metrics`` exactly. On lifespan shutdown it closes its probe connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any, Callable

import peewee

from api.db.health.wsgi import LIVE, ROUTES, HealthApp
from api.db.migrate.declarations import MigrationLike

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _environ(scope: Scope, path: str) -> dict[str, Any]:
    """The WSGI-style keys ``HealthApp.respond`` reads: the method, the path and the HTTP_* headers."""
    environ: dict[str, Any] = {"REQUEST_METHOD": scope.get("method", "GET"), "PATH_INFO": path}
    for name, value in scope.get("headers") or []:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        environ[key] = value.decode("latin-1")
    return environ


def _relative_path(scope: Scope) -> str:
    """The path below the mount point (Starlette: the full path in ``path``, the prefix in ``root_path``)."""
    path = str(scope.get("path") or "/")
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


class HealthASGIApp:
    """An ASGI application serving the health probes and ``/metrics`` (see the module docstring)."""

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
        fallback: ASGIApp | None = None,
    ) -> None:
        self.wsgi = HealthApp(db, migrations, cache_ttl, expose_details, token, timeout=timeout,
                              latency_threshold_ms=latency_threshold_ms,
                              ready_on_replica=ready_on_replica)  # fmt: skip
        self.checker = self.wsgi.checker
        self.fallback = fallback

    def close(self) -> None:
        """Close the probe connection (and stop the metrics sync of multiprocess mode)."""
        self.wsgi.close()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await (
                self._lifespan_through(scope, receive, send)
                if self.fallback
                else self._lifespan(receive, send)
            )
            return
        path = _relative_path(scope)
        if self.fallback is not None and (kind != "http" or path.rstrip("/") not in ROUTES):
            await self.fallback(scope, receive, send)
            return
        if kind != "http":
            return  # websockets are not served; the connection is refused by the server
        await self._http(scope, send, path)

    async def _http(self, scope: Scope, send: Send, path: str) -> None:
        method = str(scope.get("method", "GET")).upper()
        environ = _environ(scope, path)
        if path.rstrip("/") == LIVE:
            status, headers, body = self.wsgi.respond(method, path, environ)  # no I/O: on the loop
        else:
            status, headers, body = await asyncio.to_thread(self.wsgi.respond, method, path, environ)
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _lifespan_through(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The fallback handles the lifespan; the probe connection is closed before shutdown completes."""
        assert self.fallback is not None

        async def closing_send(message: dict[str, Any]) -> None:
            if message.get("type") == "lifespan.shutdown.complete":
                await asyncio.to_thread(self.close)
            await send(message)

        await self.fallback(scope, receive, closing_send)


# The documented entry point, like health_app for WSGI.
health_asgi_app = HealthASGIApp
