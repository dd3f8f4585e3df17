"""Connection lifecycle hooks: the pool tells registered callbacks what happens to each connection.

``add_pool_listener(db, callback)`` registers ``callback`` on the database's :class:`DatabaseState`
and returns a function that removes it. The pool (:mod:`api.db.pool.pool`) calls :func:`emit` at each
point of a connection's life; with no listener registered that is one dictionary look-up and a test.
Callbacks run synchronously on the thread that caused the event (``acquire_timeout`` and the
``closed`` events of ``close_all()`` while the pool lock is held): keep them short. One that raises or
takes longer than :data:`SLOW_CALLBACK` seconds is logged; the pool carries on either way.

SQLite databases are not pooled: each ``connect()`` opens a connection (``connected``, then
``checked_out`` with no wait) and each ``close()`` closes it (``checked_in``, then ``closed``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import peewee
from playhouse.pool import PooledDatabase

from api.db.engines.state import STATE_ATTRIBUTE, DatabaseState, database_label, state_of
from api.db.error_handler import classify_error
from api.db.tracing import completed_span, current_span_event

logger = logging.getLogger(__name__)

# The event kinds, in the order of a connection's life.
CONNECTED = "connected"  # a new connection to the server was opened
CHECKED_OUT = "checked_out"  # handed to a thread (wait_seconds: how long it waited)
CHECKED_IN = "checked_in"  # given back by its thread
RESET = "reset"  # its session was reset on check-in (DISCARD ALL / COM_RESET_CONNECTION)
DISCARDED = "discarded"  # dropped from the pool (reason: one of REASONS), then closed
CLOSED = "closed"  # the driver connection was closed
ACQUIRE_TIMEOUT = "acquire_timeout"  # a checkout gave up (wait_seconds: the acquire timeout)
EVENT_KINDS = (CONNECTED, CHECKED_OUT, CHECKED_IN, RESET, DISCARDED, CLOSED, ACQUIRE_TIMEOUT)

# Why a connection was discarded.
DEAD = "dead"  # the server closed it, or a reset / statement found it broken
TOO_OLD = "too_old"  # older than POOL_MAX_LIFETIME
LEAKED = "leaked"  # its thread ended without returning it (reclaimed by the maintenance thread)
IDLE = "idle"  # idle longer than POOL_IDLE_TIMEOUT, above POOL_MIN_CONNECTIONS
REASONS = (DEAD, TOO_OLD, LEAKED, IDLE)

SLOW_CALLBACK = 0.1  # seconds: a callback slower than this is logged as slow

_lock = threading.Lock()  # serializes changes to the listener tuples (emit reads them without a lock)


@dataclass(frozen=True)
class PoolEvent:
    """One lifecycle event: plain values only (no driver object, no credentials)."""

    kind: str  # one of EVENT_KINDS
    pool: str  # the pool's masked URL
    connection: int | None = None  # an opaque number, the same for one connection from open to close
    wait_seconds: float | None = None  # checked_out, acquire_timeout
    reason: str | None = None  # discarded: one of REASONS
    timestamp: float = field(default_factory=time.time)  # wall clock

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready data."""
        return asdict(self)


PoolListener = Callable[[PoolEvent], None]


def add_pool_listener(db: peewee.Database, callback: PoolListener) -> Callable[[], None]:
    """Call ``callback(event)`` for every lifecycle event of ``db``; returns the function that removes it."""
    if not callable(callback):
        raise TypeError(f"a pool listener must be callable, got {type(callback).__name__}")
    state = state_of(db)
    with _lock:
        state.pool_listeners = (*state.pool_listeners, callback)
    if not isinstance(db, PooledDatabase):
        _instrument_unpooled(db)

    def remove() -> None:
        with _lock:
            listeners = list(state.pool_listeners)
            if callback in listeners:
                listeners.remove(callback)
            state.pool_listeners = tuple(listeners)

    return remove


def emit(
    db: peewee.Database, kind: str, conn: Any = None, *, wait: float | None = None, reason: str | None = None
) -> None:
    """Tell the listeners of ``db`` about one event; nearly free when there are none."""
    state: DatabaseState | None = db.__dict__.get(STATE_ATTRIBUTE)
    if state is None or not state.pool_listeners:
        return
    event = PoolEvent(kind, state.url or database_label(db), None if conn is None else id(conn), wait, reason)
    for callback in state.pool_listeners:
        _call(callback, event)


def emit_acquire_timeout(db: peewee.Database, waited: float) -> None:
    """The ``acquire_timeout`` event, also recorded as an event of the caller's current span."""
    current_span_event("api_db.pool.acquire_timeout", {"api_db.pool.wait_ms": round(waited * 1000, 3)})
    emit(db, ACQUIRE_TIMEOUT, wait=waited)


def _call(callback: PoolListener, event: PoolEvent) -> None:
    """Run one callback; an error or a slow call is logged, never raised into the pool."""
    started = time.perf_counter()
    try:
        callback(event)
    except Exception as exc:  # the application's callback failed: the pool must carry on
        info = classify_error(exc)
        logger.warning(
            "pool %s: listener %s failed on %s (%s: %s); the pool carries on",
            event.pool, _name(callback), event.kind, type(exc).__name__, info.message,
            extra={"pool": event.pool, "event": event.kind, "error_category": info.category.value},
        )  # fmt: skip
        return
    elapsed = time.perf_counter() - started
    if elapsed > SLOW_CALLBACK:
        logger.warning(
            "pool %s: listener %s took %.1f ms on %s; hand slow work to another thread",
            event.pool, _name(callback), elapsed * 1000, event.kind,
            extra={"pool": event.pool, "event": event.kind, "duration_ms": round(elapsed * 1000, 3)},
        )  # fmt: skip


def _name(callback: Any) -> str:
    return str(getattr(callback, "__qualname__", None) or type(callback).__name__)


def _instrument_unpooled(db: peewee.Database) -> None:
    """SQLite (not pooled): wrap this database's ``_connect`` / ``_close`` once to emit the events."""
    if db.__dict__.get("_api_db_events"):
        return
    db.__dict__["_api_db_events"] = True
    methods: Any = db  # _connect / _close are peewee's private hooks, not in its type information
    open_raw, close_raw = methods._connect, methods._close

    def _connect(*args: Any, **kwargs: Any) -> Any:
        conn = open_raw(*args, **kwargs)
        emit(db, CONNECTED, conn)
        emit(db, CHECKED_OUT, conn, wait=0.0)
        return conn

    def _close(conn: Any, *args: Any, **kwargs: Any) -> Any:
        emit(db, CHECKED_IN, conn)
        try:
            return close_raw(conn, *args, **kwargs)
        finally:
            emit(db, CLOSED, conn)

    methods._connect = _connect
    methods._close = _close


def trace_checkouts(db: peewee.Database) -> Callable[[], None]:
    """An ``api_db.pool.checkout`` span per checkout of ``db`` (off by default); returns its remover."""

    def on_event(event: PoolEvent) -> None:
        if event.kind == CHECKED_OUT:
            wait = event.wait_seconds or 0.0
            completed_span("api_db.pool.checkout", db, wait, {"api_db.pool.wait_ms": round(wait * 1000, 3)})

    return add_pool_listener(db, on_event)
