"""OpenTelemetry spans for migration runs, the lock wait, each migration, previews, preflight and checkouts.

Optional: ``opentelemetry-api`` (``pip install 'api-db[otel]'``) is imported on the first span only, and
only if it is installed; without it every helper here is a no-op and nothing is imported. The application
brings the SDK and its tracer provider; without one the API's no-op tracer answers.

Attributes follow the database semantic conventions (``db.system``, ``db.namespace``,
``db.operation.name``, ``server.address``, ``server.port``) plus ``api_db.*`` names
(docs/OBSERVABILITY.md lists them). No attribute carries a statement's parameters or a password:
every text goes through :func:`api.db.redact.redact_text` first.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import peewee

from api.db.engines import engine_class
from api.db.engines.state import state_of
from api.db.exceptions import ConfigurationError, UnsupportedCapability
from api.db.redact import redact_text

TRACER_NAME = "api.db"
MAX_TEXT = 300  # characters kept of a text attribute or a status description
_trace_module: Any = None  # opentelemetry.trace once imported; False when it is not installed
_provider: Any = None  # a tracer provider for api.db's spans only (set_tracer_provider); None: the global one
_tracers: dict[int, Any] = {}  # id(provider) (0: the global one) -> its tracer; making one costs ~10 us

F = TypeVar("F", bound=Callable[..., Any])
Attributes = Mapping[str, Any]


def _trace() -> Any:
    """The ``opentelemetry.trace`` module, or None when opentelemetry-api is not installed."""
    global _trace_module
    if _trace_module is None:
        try:
            from opentelemetry import trace
        except ImportError:  # the optional extra is not installed: tracing stays off, nothing else changes
            _trace_module = False
        else:
            _trace_module = trace
    return _trace_module or None


def _recording_trace() -> Any:
    """The ``opentelemetry.trace`` module when a provider could record our spans, else None.

    With no provider of ours and none set globally (the proxy that opentelemetry starts with),
    every span would be a non-recording one: skipping it saves microseconds on the no-op boot.
    """
    trace = _trace()
    if trace is None or _provider is not None:
        return trace
    return None if type(trace.get_tracer_provider()) is trace.ProxyTracerProvider else trace


def set_tracer_provider(provider: Any) -> None:
    """Send api.db's spans to ``provider`` rather than the global one (None: back to the global provider)."""
    global _provider
    _provider = provider
    _tracers.clear()


def _tracer(trace: Any) -> Any:
    """api.db's tracer, made once per provider (the global one's is a proxy that follows a later set)."""
    provider = _provider
    tracer = _tracers.get(id(provider) if provider is not None else 0)
    if tracer is None:
        tracer = (provider or trace).get_tracer(TRACER_NAME)
        _tracers[id(provider) if provider is not None else 0] = tracer
    return tracer


def tracing_available() -> bool:
    """True when opentelemetry-api is installed (spans are then made; recorded if a provider is set)."""
    return _trace() is not None


def _clean(value: Any) -> Any:
    """An attribute value: numbers and booleans as they are, texts redacted and cut, sequences of texts."""
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(redact_text(str(item))[:MAX_TEXT] for item in value)
    return redact_text(str(value))[:MAX_TEXT]


class Span:
    """A span being recorded, or nothing: ``set`` and ``event`` cost a test when tracing is off."""

    __slots__ = ("_span", "expected")

    def __init__(self, span: Any = None) -> None:
        self._span = span
        self.expected: tuple[type[BaseException], ...] = ()  # exceptions that do not mark the span as error

    @property
    def recording(self) -> bool:
        return self._span is not None and bool(self._span.is_recording())

    def set(self, key: str, value: Any) -> None:
        """Set one attribute (skipped when ``value`` is None or the span is not recorded)."""
        if value is not None and self.recording:
            self._span.set_attribute(key, _clean(value))

    def set_clean(self, attributes: Attributes) -> None:
        """Set attributes already cleaned (:func:`db_attributes`), without masking them again."""
        if self.recording:
            self._span.set_attributes(attributes)

    def set_many(self, attributes: Attributes | None) -> None:
        """Set each attribute of ``attributes``."""
        for key, value in (attributes or {}).items():
            self.set(key, value)

    def event(self, name: str, attributes: Attributes | None = None) -> None:
        """Add a span event with cleaned attributes."""
        if self.recording:
            self._span.add_event(name, {k: _clean(v) for k, v in (attributes or {}).items() if v is not None})

    def error(self, exc: BaseException) -> None:
        """Mark the span as failed by ``exc``: status, ``error.type`` and a redacted exception event."""
        trace = _trace()
        if trace is None or not self.recording:
            return
        text = redact_text(str(exc))[:MAX_TEXT]
        self._span.set_status(trace.Status(trace.StatusCode.ERROR, f"{type(exc).__name__}: {text}"))
        self._span.set_attribute("error.type", type(exc).__name__)
        self.event("exception", {"exception.type": type(exc).__name__, "exception.message": text})


NO_SPAN = Span()


def _server_facts(url: str) -> dict[str, Any]:
    """``server.address`` and ``server.port`` from a masked URL (none for a file database)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # a URL connect() accepted always splits; a hand-made state may not
        return {}
    facts: dict[str, Any] = {}
    if host:
        facts["server.address"] = host
    if port:
        facts["server.port"] = port
    return facts


def db_attributes(db: peewee.Database | None) -> dict[str, Any]:
    """The semantic-convention attributes of ``db`` (computed once per database, no round trip)."""
    if db is None:
        return {}
    state = state_of(db)
    if state.span_facts is None:
        try:
            engine = engine_class(db)
            system, networked = engine.otel_system, engine.networked
        except ConfigurationError:  # a database class api.db does not know: the generic value
            system, networked = "other_sql", True
        name = str(getattr(db, "database", "") or "")
        namespace = name if networked else os.path.basename(name)
        facts: dict[str, Any] = {"db.system": system, "db.namespace": namespace}
        facts.update(_server_facts(state.url))
        state.span_facts = {key: _clean(value) for key, value in facts.items()}
    return dict(state.span_facts)


@contextlib.contextmanager
def span(
    name: str,
    db: peewee.Database | None = None,
    *,
    operation: str | None = None,
    attributes: Attributes | None = None,
) -> Iterator[Span]:
    """A current span named ``name`` around the block; an exception marks it as error and propagates."""
    trace = _recording_trace()
    if trace is None:
        yield NO_SPAN
        return
    tracer = _tracer(trace)
    with tracer.start_as_current_span(name, record_exception=False, set_status_on_exception=False) as raw:
        handle = Span(raw)
        if handle.recording:
            handle.set_clean(db_attributes(db))
            handle.set("db.operation.name", operation)
            handle.set_many(attributes)
        try:
            yield handle
        except BaseException as exc:
            if not isinstance(exc, handle.expected):
                handle.error(exc)
            raise


def _database_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> peewee.Database | None:
    candidate = args[0] if args else kwargs.get("db", kwargs.get("database"))
    if isinstance(candidate, peewee.DatabaseProxy):
        candidate = candidate.obj
    return candidate if isinstance(candidate, peewee.Database) else None


def traced(
    name: str, *, operation: str, result: Callable[[Any], Attributes] | None = None
) -> Callable[[F], F]:
    """Decorate a function whose first argument is the database: a span around each call.

    ``result`` maps the return value to attributes of the span.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _recording_trace() is None:
                return function(*args, **kwargs)
            with span(name, _database_argument(args, kwargs), operation=operation) as handle:
                value = function(*args, **kwargs)
                if result is not None and handle.recording:
                    handle.set_many(result(value))
                return value

        return cast(F, wrapper)

    return decorate


@contextlib.contextmanager
def lock_span(db: peewee.Database, lock: contextlib.AbstractContextManager[Any]) -> Iterator[Any]:
    """Hold ``lock`` for the block (yielding what it yields); a ``migration_lock`` span times the wait."""
    with contextlib.ExitStack() as stack:
        try:
            strategy = engine_class(db).lock_strategy
        except ConfigurationError:  # unknown database class: the lock itself raises the real error
            strategy = ""
        started = time.perf_counter()
        attributes = {"api_db.lock.strategy": strategy}
        with span("migration_lock", db, operation="lock", attributes=attributes) as handle:
            held = stack.enter_context(lock)
            handle.set("api_db.lock.wait_ms", round((time.perf_counter() - started) * 1000, 3))
        yield held


def _migration_status(migrator: Any, exc: BaseException | None) -> str:
    """success, skipped or failed, as the runner decides it (adopted: every operation already in effect)."""
    if exc is not None:
        return "skipped" if isinstance(exc, UnsupportedCapability) else "failed"
    if migrator.already and not migrator.executed and migrator.resume_after == 0:
        return "skipped"
    return "success"


@contextlib.contextmanager
def migration_span(db: peewee.Database, name: str, migrator: Any) -> Iterator[None]:
    """A ``migration <name>`` span around one migration function; counts read from its migrator ``m``."""
    attributes = {"api_db.migration.name": name}
    with span(f"migration {name}", db, operation="migrate", attributes=attributes) as handle:
        handle.expected = (UnsupportedCapability,)
        failure: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            handle.set("api_db.migration.status", _migration_status(migrator, failure))
            handle.set("api_db.migration.operations", len(migrator.completed))
            handle.set("api_db.migration.statements", len(migrator.log.statements))


def report_attributes(report: Any) -> dict[str, Any]:
    """Attributes of a ``migrate_db`` span from its MigrationReport."""
    return {
        "api_db.migrations.declared": report.declared,
        "api_db.migrations.pending": len(report.pending_before),
        "api_db.migrations.applied": len(report.applied),
        "api_db.migrations.skipped": len(report.skipped),
        "api_db.migrations.failed": len(report.failed),
        "api_db.migrations.fast_path": report.fast_path,
    }


def preview_attributes(preview: Any) -> dict[str, Any]:
    """Attributes of a ``preview_migration`` span from its MigrationPreview."""
    return {
        "api_db.preview.statements": len(getattr(preview, "statements", ()) or ()),
        "api_db.preview.warnings": len(getattr(preview, "warnings", ()) or ()),
    }


def preflight_attributes(report: Any) -> dict[str, Any]:
    """Attributes of a ``preflight`` span from its ExtendedPreflightReport."""
    checks = len(getattr(report, "checks", ()))
    return {"api_db.preflight.ok": bool(report.ok), "api_db.preflight.checks": checks}


def completed_span(
    name: str, db: peewee.Database, seconds: float, attributes: Attributes | None = None
) -> None:
    """A span that started ``seconds`` ago and ends now (a checkout); ``attributes`` hold numbers only."""
    trace = _trace()
    if trace is None:
        return
    end = time.time_ns()
    raw = _tracer(trace).start_span(name, start_time=end - int(seconds * 1e9))
    if raw.is_recording():
        raw.set_attributes(db_attributes(db))
        raw.set_attributes(attributes or {})  # numbers from the pool: nothing to mask
    raw.end(end_time=end)


def current_span_event(name: str, attributes: Attributes | None = None) -> None:
    """Add an event to the caller's current span (the application's request, a migration run)."""
    trace = _trace()
    if trace is not None:
        Span(trace.get_current_span()).event(name, attributes)
