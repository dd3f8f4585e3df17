"""Instrumented ``playhouse.pool`` databases: bounded waits, counters, session reset, leak tracking.

``playhouse.pool`` is kept for everything it does well (the thread-local
connection state, ``close_all``, ``manual_close``, ``close_stale``); this module
replaces the parts that cannot be observed or that misbehave under load, and
says why next to each:

* checkout counts waiters, records its wait, raises :class:`PoolTimeout` naming
  the oldest holder, and opens new connections *outside* the pool lock and the
  database lock, with retries (playhouse opens them holding both, so one slow
  handshake or backoff would stall every other thread, even those returning);
* check-in resets the session (PostgreSQL ``DISCARD ALL``, MySQL
  ``COM_RESET_CONNECTION``) after any statement that may have changed it, or
  always (``reset_session``), so no advisory lock, ``GET_LOCK``, ``SET`` or
  temporary table reaches the next borrower (playhouse only rolls back);
* a connection the server dropped is found on checkout (its socket has become
  readable, or a ping after it sat idle: playhouse pings on every checkout) and
  replaced; one that dies under a statement outside a transaction is let go at
  once; no statement is ever re-run;
* a maintenance thread (named, weakly referenced, stopped by ``close_all()``)
  reports leaks, reclaims connections of dead threads, closes idle ones and keeps
  ``min_connections`` open.
"""

from __future__ import annotations

import logging
import math
import os
import re
import select
import sys
import threading
import time
import traceback
import weakref
from bisect import bisect_left
from collections import deque
from typing import Any

import peewee
from playhouse.pool import PooledDatabase, PooledMySQLDatabase, PooledPostgresqlDatabase

from api.db.engines import engine_class
from api.db.engines.mysql import MySQLEngine
from api.db.engines.state import state_of
from api.db.error_handler import classify_error
from api.db.exceptions import PoolTimeout
from api.db.pool import forks
from api.db.pool.config import PoolConfig, RetryConfig
from api.db.pool.events import (
    CHECKED_IN,
    CHECKED_OUT,
    CLOSED,
    CONNECTED,
    DEAD,
    DISCARDED,
    IDLE,
    LEAKED,
    RESET,
    TOO_OLD,
    emit,
    emit_acquire_timeout,
)  # fmt: skip
from api.db.pool.retry import call_with_retry

logger = logging.getLogger(__name__)

# peewee's driver-error translator (DB-API errors -> peewee.OperationalError ...), as Database.connect uses
# it.
_EXCEPTION_WRAPPER: Any = vars(peewee)["__exception_wrapper__"]

WAIT_SAMPLES = 1000  # acquire waits kept for the percentiles
# Upper bounds (seconds) of the acquire-wait histogram buckets, for Prometheus (``le``); +Inf is implied.
WAIT_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
)  # fmt: skip
WAIT_SLICE = 0.1  # seconds a waiter sleeps before it looks for slots freed without a hand-off
STACK_LIMIT = 12  # frames kept of an acquiring stack when leak detection is on (each costs ~0.7 us)

# Frames from these directories are skipped when naming "the code that acquired a connection".
_INTERNAL_DIRS = (
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,  # the whole api.db package
    os.path.dirname(os.path.abspath(peewee.__file__)) + os.sep,
) + (os.path.dirname(os.path.abspath(sys.modules[PooledDatabase.__module__].__file__ or "")) + os.sep,)
_internal_code: dict[Any, bool] = {}


def _is_internal(code: Any) -> bool:
    known = _internal_code.get(code)
    if known is None:
        filename = os.path.abspath(code.co_filename)
        known = filename.startswith(_INTERNAL_DIRS) or filename == os.path.abspath(peewee.__file__)
        _internal_code[code] = known
    return known


def _caller_frame() -> Any:
    frame: Any = sys._getframe(1)
    while frame is not None and _is_internal(frame.f_code):
        frame = frame.f_back
    return frame


# Statements after which a session may differ from a fresh one (POOL_RESET_SESSION=auto resets it on
# check-in): SET (not SET LOCAL / SET TRANSACTION), session advisory locks, GET_LOCK, user variables,
# temporary tables, LISTEN, PREPARE, cursors, LOCK TABLES, USE, CALL / DO (which may do any of these).
_SESSION_CHANGE = re.compile(
    r"(?:^|;)\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*"
    r"(?:SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b)|LISTEN\b|PREPARE\b|DECLARE\b|LOCK\s+TABLES?\b|USE\b|CALL\b"
    r"|DO\b|HANDLER\b|CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\b)"
    r"|\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\(|\bset_config\s*\(|\bGET_LOCK\s*\(|@\w+\s*:=|\bINTO\s+TEMP(?:ORARY)?\b",
    re.IGNORECASE | re.DOTALL,
)
_session_change_cache: dict[str, bool] = {}


def changes_session(sql: str) -> bool:
    """True when ``sql`` may leave session state behind (a lock, a setting, a temporary table)."""
    known = _session_change_cache.get(sql)
    if known is None:
        known = _SESSION_CHANGE.search(sql) is not None
        if len(_session_change_cache) >= 4096:
            _session_change_cache.clear()
        _session_change_cache[sql] = known
    return known


def _frames(frame: Any, limit: int) -> list[tuple[Any, int]]:
    """(code, instruction offset) of ``frame`` and its callers: cheap; lines are found only when reported."""
    frames: list[tuple[Any, int]] = []
    while frame is not None and len(frames) < limit:
        frames.append((frame.f_code, frame.f_lasti))
        frame = frame.f_back
    return frames


def _line_of(code: Any, offset: int) -> int:
    for start, end, line in code.co_lines():
        if start <= offset < end and line is not None:
            return int(line)
    return int(code.co_firstlineno)


class Checkout:
    """One checked-out connection: who took it, when, and from where."""

    __slots__ = (
        "key", "connection", "timestamp", "checked_out", "started", "thread", "site", "stack", "reported",
        "dirty",
    )  # fmt: skip

    def __init__(self, connection: Any, created: float, frame: Any, capture_stack: bool) -> None:
        self.key = id(connection)
        self.connection = connection
        self.timestamp = created  # wall clock of creation (playhouse's PoolConnection.timestamp)
        self.checked_out = time.time()  # wall clock (playhouse's close_stale reads it)
        self.started = time.monotonic()
        self.thread = threading.current_thread()
        self.site = (
            (frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_name) if frame is not None else None
        )
        self.stack = _frames(frame, STACK_LIMIT) if capture_stack else None
        self.reported = False
        self.dirty = False  # a statement may have changed the session: reset it on check-in

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    @property
    def call_site(self) -> str:
        if self.site is None:
            return "unknown"
        return f"{self.site[0]}:{self.site[1]} in {self.site[2]}"

    def format_stack(self) -> str:
        if self.stack is None:
            return f"  {self.call_site} (set POOL_LEAK_THRESHOLD for the full stack)"
        frames = traceback.StackSummary.from_list(
            [
                (code.co_filename, _line_of(code, offset), code.co_name, None)
                for code, offset in reversed(self.stack)
            ]
        )
        return "".join(frames.format()).rstrip()


class _Idle:
    __slots__ = ("connection", "created", "returned")

    def __init__(self, connection: Any, created: float, returned: float) -> None:
        self.connection = connection
        self.created = created  # wall clock
        self.returned = returned  # monotonic


class _Waiter:
    """A thread waiting for a connection: ``ready`` is released when it is granted ``item`` (or a slot)."""

    __slots__ = ("ready", "item", "granted")

    def __init__(self) -> None:
        self.ready = threading.Lock()
        self.ready.acquire()
        self.item: _Idle | None = None
        self.granted = False


class PoolCounters:
    """Monotonic counters and the recent acquire waits of one pool; every update holds its lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acquisitions = 0
        self.timeouts = 0
        self.created = 0
        self.closed = 0
        self.lost = 0
        self.reclaimed = 0
        self.leaks = 0
        self.waits: deque[float] = deque(maxlen=WAIT_SAMPLES)  # seconds
        self.wait_buckets = [0] * (len(WAIT_BUCKETS) + 1)  # per bucket, not cumulative; the last is +Inf
        self.wait_sum = 0.0  # seconds, every acquisition since the pool was made

    def add(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)

    def acquired(self, wait: float) -> None:
        with self.lock:
            self.acquisitions += 1
            self.waits.append(wait)
            # a wait equal to a bound counts in it (le)
            self.wait_buckets[bisect_left(WAIT_BUCKETS, wait)] += 1
            self.wait_sum += wait

    def wait_histogram(self) -> tuple[list[tuple[float, int]], float, int]:
        """Cumulative ``(upper bound, count)`` pairs up to ``(inf, total)``, the sum of waits, the total."""
        with self.lock:
            counts, total_wait = list(self.wait_buckets), self.wait_sum
        cumulative: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*WAIT_BUCKETS, math.inf), counts):
            running += count
            cumulative.append((bound, running))
        return cumulative, total_wait, running

    def wait_percentiles_ms(self) -> tuple[float, float, float]:
        with self.lock:
            samples = sorted(self.waits)
        if not samples:
            return 0.0, 0.0, 0.0
        return _percentile(samples, 50) * 1e3, _percentile(samples, 95) * 1e3, samples[-1] * 1e3


def _percentile(ordered: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


class InstrumentedPool(PooledDatabase):
    """Mixin over a playhouse pooled database; see the module docstring for what it changes."""

    _connections: list[_Idle]  # idle connections, most recently returned last (playhouse keeps a heap here)
    _in_use: dict[int, Any]  # id(connection) -> Checkout

    def __init__(
        self,
        database: Any,
        *,
        pool_config: PoolConfig,
        retry_config: RetryConfig,
        target: str,
        **kwargs: Any,
    ) -> None:
        self.pool_config = pool_config
        self.retry_config = retry_config
        self.target = target
        self.counters = PoolCounters()
        self._waiting = 0
        self._waiters: deque[_Waiter] = deque()  # threads waiting for a connection, oldest first
        self._opening = 0  # slots reserved by threads opening a new connection
        self._returning = 0  # connections between check-in and the idle list (being reset)
        self._maintenance: _Maintenance | None = None
        super().__init__(
            database,
            max_connections=pool_config.max_connections,
            stale_timeout=pool_config.max_lifetime,
            timeout=pool_config.acquire_timeout,
            **kwargs,
        )
        forks.register(self)

    # ---------------------------------------------------------------- checkout

    def connect(self, reuse_if_open: bool = False) -> bool:
        # Database.connect() would hold the database-wide lock while the pool opens a
        # connection (handshake, retries): every other thread would queue behind it.
        if self.deferred:
            raise peewee.InterfaceError("Error, database must be initialized before opening a connection.")
        if not self._state.closed:
            if reuse_if_open:
                return False
            raise peewee.OperationalError("Connection already opened.")
        conn = self._checkout()
        self._ensure_maintenance()  # after the first checkout, so the warm-up counts it
        try:
            # Keep the open connection_context() blocks when a broken connection was
            # discarded under them (see _discard_broken); after a normal close ctx is empty.
            contexts = self._state.ctx
            self._state.reset()
            self._state.set_connection(conn)
            self._state.ctx = contexts
            with _EXCEPTION_WRAPPER:
                if self.server_version is None:
                    with self._lock:
                        self._set_server_version(conn)
                self._initialize_connection(conn)
        except BaseException:
            self._state.reset()
            self._close(conn)
            raise
        return True

    def _connect(self) -> Any:
        # Only reached through playhouse code paths that bypass connect(); keep them bounded too.
        return self._checkout()

    def _checkout(self) -> Any:
        config = self.pool_config
        started = time.monotonic()
        deadline = started + config.acquire_timeout
        frame = _caller_frame()
        while True:
            candidate = self._claim(deadline)
            try:
                if candidate is not None:
                    conn = candidate.connection
                    created = candidate.created
                    if not self._usable(candidate):
                        self._release_slot()
                        continue
                else:
                    conn = self._open_connection()
                    created = time.time()
            except BaseException:
                self._release_slot()
                raise
            checkout = Checkout(conn, created, frame, config.leak_threshold > 0)
            with self._pool_lock:
                self._opening -= 1
                self._in_use[checkout.key] = checkout
            self.counters.acquired(time.monotonic() - started)
            emit(self, CHECKED_OUT, conn, wait=checkout.started - started)
            return conn

    def _claim(self, deadline: float) -> _Idle | None:
        """An idle connection, or None for a reserved slot to open one; waiters are served in arrival order.

        Either way the slot is counted in ``_opening`` until the caller records the checkout.
        Uncontended (nobody waiting) this is one lock round; otherwise the caller queues.
        """
        with self._pool_lock:
            if not self._waiters:
                if self._connections:
                    self._opening += 1
                    return self._connections.pop()  # most recently returned: warmest
                if len(self._in_use) + self._opening + self._returning < self._max_connections:
                    self._opening += 1
                    return None
            waiter = _Waiter()
            self._waiters.append(waiter)
            self._waiting += 1
            self._wake()  # a connection may be free while others wait: the oldest waiter gets it
        return self._wait_for_grant(waiter, deadline)

    def _wait_for_grant(self, waiter: _Waiter, deadline: float) -> _Idle | None:
        """Block until ``waiter`` is handed a connection or a slot, or raise PoolTimeout at ``deadline``."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining > 0 and waiter.ready.acquire(timeout=min(remaining, WAIT_SLICE)):
                return waiter.item
            with self._pool_lock:
                if waiter.granted:  # granted between the timeout and the lock
                    return waiter.item
                if remaining > 0:
                    self._wake()  # a slot freed where no grant is made (playhouse's own close paths)
                    continue
                self._waiters.remove(waiter)
                self._waiting -= 1
                self.counters.add("timeouts")
                emit_acquire_timeout(self, self.pool_config.acquire_timeout)
                raise PoolTimeout(self._timeout_message(self.pool_config.acquire_timeout))

    def _wake(self) -> None:
        """Hand idle connections, then free slots, to the oldest waiters; the caller holds the pool lock."""
        while self._waiters:
            if self._connections:
                item: _Idle | None = self._connections.pop()
            elif len(self._in_use) + self._opening + self._returning < self._max_connections:
                item = None
            else:
                return
            waiter = self._waiters.popleft()
            self._waiting -= 1
            self._opening += 1  # the slot is the waiter's until it records its checkout
            waiter.item, waiter.granted = item, True
            waiter.ready.release()

    def _release_slot(self) -> None:
        with self._pool_lock:
            self._opening -= 1
            self._wake()

    def _usable(self, idle: _Idle) -> bool:
        """False (and the connection closed, counted lost or expired) when it must not be handed out."""
        conn = idle.connection
        if self._stale_timeout and time.time() - idle.created > self._stale_timeout:
            emit(self, DISCARDED, conn, reason=TOO_OLD)
            self._close_raw(conn)
            return False
        recently_used = time.monotonic() - idle.returned < self.pool_config.alive_bypass
        if recently_used and not self._socket_readable(conn):
            return True
        # The socket spoke unprompted (a server closing it says so) or the connection sat idle: ping.
        if self._is_closed(conn):
            logger.info("pool %s: a connection dropped by the server was replaced", self.target,
                        extra={"event": "discarded", "pool": self.target, "reason": DEAD})
            self.counters.add("lost")
            emit(self, DISCARDED, conn, reason=DEAD)
            self._close_raw(conn)
            return False
        return True

    def _socket_readable(self, conn: Any) -> bool:
        fileno = self._fileno(conn)
        if fileno is None:
            return True
        poller = select.poll()
        poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))

    def _fileno(self, conn: Any) -> int | None:
        return None

    def _open_connection(self) -> Any:
        conn = call_with_retry(
            self._open_raw,
            config=self.retry_config,
            db_type=self._engine_name(),
            target=self.target,
        )
        self.counters.add("created")
        emit(self, CONNECTED, conn)
        return conn

    def _open_raw(self) -> Any:
        conn = super(PooledDatabase, self)._connect()
        try:
            self._init_session(conn)
        except BaseException:
            super(PooledDatabase, self)._close(conn)
            raise
        return conn

    def _init_session(self, conn: Any) -> None:
        """Session settings that a new connection (and a reset one) needs."""

    def _engine_name(self) -> str:
        return engine_class(self).name

    def _timeout_message(self, timeout: float) -> str:
        oldest: Checkout | None = None
        for checkout in self._in_use.values():
            if isinstance(checkout, Checkout) and (oldest is None or checkout.started < oldest.started):
                oldest = checkout
        held = (
            f"the oldest was checked out {oldest.age:.1f}s ago "
            f"by thread {oldest.thread.name!r} at {oldest.call_site}"
            if oldest is not None
            else "none is held by a known caller"
        )
        return (
            f"no connection free in pool {self.target} after waiting {timeout:g}s: "
            f"pool size {self._max_connections}, {len(self._in_use)} in use, "
            f"{self._waiting} other(s) waiting; "
            f"{held}. Return connections promptly (use db.connection_context()), raise POOL_MAX_CONNECTIONS, "
            "or set POOL_LEAK_THRESHOLD to report connections held too long"
        )

    # ---------------------------------------------------------------- session tracking

    def _execute_cursor(self, sql: str, params: Any, **cursor_options: Any) -> Any:
        # peewee's own _execute_cursor (same hooks, same error translation), plus a note
        # on the checkout when the statement may change the session (POOL_RESET_SESSION=auto).
        self._log_query(sql, params)
        start: float | None = None
        try:
            with _EXCEPTION_WRAPPER:
                cursor = self.cursor(**cursor_options)  # may open the connection: not the statement's time
                start = time.perf_counter() if self.query_hooks else None
                if changes_session(sql):
                    self._mark_dirty()
                cursor.execute(sql, params or ())
        except Exception as exc:
            if start is not None:
                self._notify_hooks(sql, params, start, exc)
            self._after_failure(exc)
            raise
        if start is not None:
            self._notify_hooks(sql, params, start, None)
        return cursor

    def _after_failure(self, exc: BaseException) -> None:
        """A statement failed: if the connection is gone and no transaction was open, let it go now.

        The statement is not re-run (it may have reached the server); the next one, on this
        thread, gets a fresh connection even if the application never closes its connection.
        """
        conn = self._state.conn
        if conn is None or self._state.transactions or not self._is_broken(conn):
            return
        info = classify_error(exc, self._engine_name())
        logger.info(
            "pool %s: connection lost outside a transaction (%s: %s); the next statement opens a new one",
            self.target, info.category.value, info.message,
        )  # fmt: skip
        with self._pool_lock:
            self._in_use.pop(self.conn_key(conn), None)
        self.counters.add("lost")
        emit(self, DISCARDED, conn, reason=DEAD)
        self._close_raw(conn)
        self._state.conn = None
        self._state.closed = True
        with self._pool_lock:
            self._wake()

    def _is_broken(self, conn: Any) -> bool:
        """The driver says the connection is closed (no round trip)."""
        return False

    def connection(self) -> Any:
        """The raw driver connection; what is done with it is unseen, so its session is reset on check-in."""
        conn = super().connection()
        self._mark_dirty()
        return conn

    def _mark_dirty(self) -> None:
        conn = self._state.conn
        checkout = self._in_use.get(self.conn_key(conn)) if conn is not None else None
        if checkout is not None:
            checkout.dirty = True

    def _needs_reset(self, checkout: Checkout) -> bool:
        mode = self.pool_config.reset_session
        return mode == "always" or (mode == "auto" and checkout.dirty)

    # ---------------------------------------------------------------- check-in

    def close(self) -> bool:
        # Database.close() holds the database-wide lock during check-in, which here
        # includes the session reset round trip: skip it, the state is thread-local.
        if self.deferred:
            raise peewee.InterfaceError("Error, database must be initialized before opening a connection.")
        if self.in_transaction():
            raise peewee.OperationalError("Attempting to close database while transaction is open.")
        is_open = not self._state.closed
        try:
            if is_open:
                with _EXCEPTION_WRAPPER:
                    self._close(self._state.conn)
        finally:
            self._state.reset()
        return is_open

    def _close(self, conn: Any, close_conn: bool = False) -> None:
        key = self.conn_key(conn)
        with self._pool_lock:
            checkout = self._in_use.pop(key, None)
            if checkout is not None and not close_conn:
                self._returning += 1
        if checkout is not None:
            emit(self, CHECKED_IN, conn)
        if close_conn or checkout is None:
            if close_conn:
                self._close_raw(conn)
            with self._pool_lock:
                self._wake()
            return
        keep = False
        try:
            if self._stale_timeout and time.time() - checkout.timestamp > self._stale_timeout:
                emit(self, DISCARDED, conn, reason=TOO_OLD)
                self._close_raw(conn)
            elif not self._reset(conn, self._needs_reset(checkout)):
                self.counters.add("lost")
                emit(self, DISCARDED, conn, reason=DEAD)
                self._close_raw(conn)
            else:
                keep = True
                if self._needs_reset(checkout):
                    emit(self, RESET, conn)
        finally:
            with self._pool_lock:
                self._returning -= 1
                if keep:
                    self._connections.append(_Idle(conn, checkout.timestamp, time.monotonic()))
                self._wake()

    def _reset(self, conn: Any, full: bool) -> bool:
        """Roll back, and reset the session when ``full``; False when the connection is broken."""
        return bool(self._can_reuse(conn))

    def _close_raw(self, conn: Any) -> None:
        self.counters.add("closed")
        try:
            super(PooledDatabase, self)._close(conn)
        except Exception as exc:  # the connection is being discarded; a failing close changes nothing
            info = classify_error(exc, self._engine_name())
            logger.debug(
                "pool %s: closing a connection failed (%s): %s",
                self.target,
                info.category.value,
                info.message,
            )
        emit(self, CLOSED, conn)

    def close_idle(self) -> None:
        with self._pool_lock:
            idle: list[_Idle] = self._connections
            self._connections = []
        for entry in idle:
            self._close_raw(entry.connection)

    def close_all(self) -> None:
        """Close every connection, idle and in use, and stop the maintenance thread."""
        maintenance, self._maintenance = self._maintenance, None
        if maintenance is not None:
            maintenance.stop()
        super().close_all()
        for callback in list(state_of(self).on_close):
            callback()

    # ---------------------------------------------------------------- inspection

    def pool_snapshot(self) -> dict[str, Any]:
        """Gauges read under the pool lock: max, min, active, idle, waiting, opening."""
        with self._pool_lock:
            return {
                "max": self._max_connections,
                "min": self.pool_config.min_connections,
                "active": len(self._in_use),
                "idle": len(self._connections),
                "waiting": self._waiting,
                "opening": self._opening,
            }

    def checkouts(self) -> list[Checkout]:
        """The connections checked out now, oldest first."""
        with self._pool_lock:
            items = [c for c in self._in_use.values() if isinstance(c, Checkout)]
        return sorted(items, key=lambda c: c.started)

    # ---------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        """In a forked child: forget the parent's connections (not closing them), fresh locks and counters."""
        inherited = [entry.connection for entry in self._connections]
        inherited += [c.connection for c in self._in_use.values() if isinstance(c, Checkout)]
        if self._state.conn is not None:
            inherited.append(self._state.conn)
        detached = forks.detach_descriptors(self._fileno(conn) for conn in inherited)
        self._reset_after_fork()
        param = engine_class(self).app_name_param
        if param is not None and str(self.connect_params.get(param, "")).endswith(f":{os.getppid()}"):
            self.connect_params[param] = engine_class(self).session_app_name(self.pool_config.app_name)
        logger.debug(
            "pool %s: forked child %s dropped %d inherited connection(s)", self.target, os.getpid(), detached
        )

    def _reset_after_fork(self) -> None:
        """Empty pool state with new locks: one a parent thread held at fork time is never released here."""
        self._pool_lock = threading.RLock()
        self._pool_available = threading.Condition(self._pool_lock)
        self._lock = threading.Lock()
        state: Any = vars(self)["_state"]
        self._state = type(state)()
        self._connections, self._in_use = [], {}
        self._waiting = self._opening = self._returning = 0
        self._maintenance = None  # the parent's thread does not exist here; the next checkout starts one
        self.counters = PoolCounters()

    # ---------------------------------------------------------------- maintenance

    def _ensure_maintenance(self) -> None:
        if self._maintenance is None:
            with self._pool_lock:
                if self._maintenance is None:
                    self._maintenance = _Maintenance(self)
                    self._maintenance.start()

    def maintain(self) -> None:
        """One maintenance pass: leaks, dead owners, idle and expired connections, the minimum."""
        self.check_leaks()
        self._reap_idle()
        self.fill_to_minimum()

    def check_leaks(self) -> int:
        """Report checkouts older than the leak threshold (once each); reclaim those of dead threads."""
        threshold = self.pool_config.leak_threshold
        reported = 0
        for checkout in self.checkouts():
            if not checkout.thread.is_alive():
                with self._pool_lock:
                    if self._in_use.pop(checkout.key, None) is None:
                        continue
                self.counters.add("reclaimed")
                emit(self, DISCARDED, checkout.connection, reason=LEAKED)
                logger.warning(
                    "pool %s: reclaiming a connection whose thread %r ended without returning it "
                    "(held %.1fs); it was acquired at:\n%s",
                    self.target, checkout.thread.name, checkout.age, checkout.format_stack(),
                    extra={"event": "discarded", "pool": self.target, "reason": LEAKED,
                           "holder_thread": checkout.thread.name},
                )  # fmt: skip
                self._close_raw(checkout.connection)
                with self._pool_lock:
                    self._wake()
                continue
            if threshold > 0 and not checkout.reported and checkout.age > threshold:
                checkout.reported = True
                reported += 1
                logger.warning(
                    "pool %s: possible connection leak: held %.1fs (POOL_LEAK_THRESHOLD=%gs) by thread %r, "
                    "acquired at:\n%s",
                    self.target, checkout.age, threshold, checkout.thread.name, checkout.format_stack(),
                    extra={"event": "leak", "pool": self.target, "holder_thread": checkout.thread.name,
                           "duration_ms": round(checkout.age * 1000, 3)},
                )  # fmt: skip
                self.counters.add("leaks")
        return reported

    def _reap_idle(self) -> None:
        config = self.pool_config
        now_mono, now_wall = time.monotonic(), time.time()
        doomed: list[tuple[Any, str]] = []
        with self._pool_lock:
            total = len(self._in_use) + len(self._connections) + self._opening + self._returning
            keep: list[_Idle] = []
            for entry in self._connections:  # oldest returned first
                expired = self._stale_timeout and now_wall - entry.created > self._stale_timeout
                idle_too_long = (
                    now_mono - entry.returned > config.idle_timeout and total > config.min_connections
                )
                if expired or idle_too_long:
                    doomed.append((entry.connection, TOO_OLD if expired else IDLE))
                    total -= 1
                else:
                    keep.append(entry)
            self._connections = keep
        for conn, reason in doomed:
            emit(self, DISCARDED, conn, reason=reason)
            self._close_raw(conn)

    def fill_to_minimum(self) -> int:
        """Open connections up to ``min_connections``; one try each, failures logged. Returns how many."""
        opened = 0
        while True:
            with self._pool_lock:
                total = len(self._in_use) + len(self._connections) + self._opening + self._returning
                if total >= min(self.pool_config.min_connections, self._max_connections):
                    return opened
                self._opening += 1
            try:
                conn = self._open_raw()
            except Exception as exc:  # the next pass tries again; checkouts retry on their own
                self._release_slot()
                info = classify_error(exc, self._engine_name())
                logger.warning(
                    "pool %s: could not open a connection to reach POOL_MIN_CONNECTIONS (%s): %s",
                    self.target, info.category.value, info.message,
                )  # fmt: skip
                return opened
            self.counters.add("created")
            emit(self, CONNECTED, conn)
            with self._pool_lock:
                self._opening -= 1
                self._connections.insert(0, _Idle(conn, time.time(), time.monotonic()))
                self._wake()
            opened += 1


class Periodic(threading.Thread):
    """A named daemon thread that runs ``step`` every ``interval`` seconds on an object it references weakly.

    It stops when ``stop()`` is called or the object is gone; a failing step is classified and logged
    by ``failed`` and the next one runs on time.
    """

    def __init__(self, name: str, target: Any, interval: float) -> None:
        super().__init__(name=name, daemon=True)
        self._target = weakref.ref(target)
        self._stop_event = threading.Event()
        self.interval = interval

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        first = True
        while first or not self._stop_event.wait(self.interval):
            first = False
            target = self._target()
            if target is None:
                return
            try:
                self.step(target)
            except Exception as exc:  # keep going; the failure is classified and logged
                self.failed(target, exc)
            del target

    def step(self, target: Any) -> None:
        raise NotImplementedError

    def failed(self, target: Any, exc: Exception) -> None:
        raise NotImplementedError


class _Maintenance(Periodic):
    """Runs ``maintain()`` on a pool until stopped or the pool is gone."""

    def __init__(self, pool: InstrumentedPool) -> None:
        config = pool.pool_config
        interval = min(1.0, config.idle_timeout / 2)
        if config.leak_threshold > 0:
            interval = max(0.05, min(interval, config.leak_threshold / 4))
        super().__init__(f"api.db-pool-maintenance[{pool.target}]", pool, interval)

    def step(self, target: Any) -> None:
        target.maintain()

    def failed(self, target: Any, exc: Exception) -> None:
        info = classify_error(exc, target._engine_name())
        logger.error("pool %s: maintenance pass failed (%s): %s", target.target, info.category.value,
                     info.message)  # fmt: skip


class InstrumentedPostgresqlDatabase(InstrumentedPool, PooledPostgresqlDatabase):
    """``PooledPostgresqlDatabase`` with api.db's checkout, check-in and counters."""

    def _is_broken(self, conn: Any) -> bool:
        return bool(conn.closed) or self._adapter.txn_status(conn) == self._adapter.txn_unknown

    def _fileno(self, conn: Any) -> int | None:
        return None if conn.closed else int(conn.fileno())

    def _reset(self, conn: Any, full: bool) -> bool:
        if conn.closed:
            return False
        adapter = self._adapter
        try:
            status = adapter.txn_status(conn)
            if status == adapter.txn_unknown:
                return False
            with conn.cursor() as cursor:
                if status != adapter.txn_idle:
                    cursor.execute("ROLLBACK")
                if full:
                    # Releases advisory locks, resets SET, drops temp tables, UNLISTEN, DEALLOCATE;
                    # application_name and -c options given at connect are the session defaults, kept.
                    cursor.execute("DISCARD ALL")
        except Exception as exc:  # a broken connection: the caller closes it and counts it lost
            info = classify_error(exc, self._engine_name())
            logger.info(
                "pool %s: connection not reusable (%s): %s", self.target, info.category.value, info.message
            )
            return False
        return True


# COM_RESET_CONNECTION (MySQL 5.7.3+, MariaDB 10.2.4+); pymysql names 0x1F COM_END and has no method for it.
COM_RESET_CONNECTION = 0x1F
_SERVER_STATUS_IN_TRANS = 1


class InstrumentedMySQLDatabase(InstrumentedPool, PooledMySQLDatabase):
    """``PooledMySQLDatabase`` with api.db's checkout, check-in and counters."""

    def _is_broken(self, conn: Any) -> bool:
        return getattr(conn, "_sock", None) is None

    def _fileno(self, conn: Any) -> int | None:
        sock = getattr(conn, "_sock", None)
        return None if sock is None else int(sock.fileno())

    def _init_session(self, conn: Any) -> None:
        statements = list(self._session_statements(conn))
        if statements:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)

    def _session_statements(self, conn: Any) -> list[str]:
        timeout = self.pool_config.statement_timeout
        if timeout <= 0:
            return []
        return [MySQLEngine.statement_timeout_sql(str(conn.get_server_info()), timeout)]

    def _reset(self, conn: Any, full: bool) -> bool:
        if getattr(conn, "_sock", None) is None:
            return False
        try:
            if full:
                # Rolls back, releases GET_LOCK and table locks, drops temporary tables and user
                # variables, resets session variables to the global values: one round trip.
                conn._execute_command(COM_RESET_CONNECTION, b"")
                conn._read_ok_packet()
                self._restore_session(conn)
            elif conn.server_status & _SERVER_STATUS_IN_TRANS:
                conn.rollback()
        except Exception as exc:  # a broken connection: the caller closes it and counts it lost
            info = classify_error(exc, self._engine_name())
            logger.info(
                "pool %s: connection not reusable (%s): %s", self.target, info.category.value, info.message
            )
            return False
        return True

    def _restore_session(self, conn: Any) -> None:
        conn.autocommit(True)  # no round trip unless the global default differs
        statements = self._session_statements(conn)
        sql_mode = self.connect_params.get("sql_mode")
        if sql_mode:
            statements.insert(0, f"SET SESSION sql_mode = {conn.escape(sql_mode)}")
        init_command = self.connect_params.get("init_command")
        if init_command:
            statements.insert(0, init_command)
        if statements:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)


# The pooled class of each peewee database class that connect() pools (SQLite is not pooled).
POOL_CLASSES: dict[type[peewee.Database], type[InstrumentedPool]] = {
    peewee.PostgresqlDatabase: InstrumentedPostgresqlDatabase,
    peewee.MySQLDatabase: InstrumentedMySQLDatabase,
}
