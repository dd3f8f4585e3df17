"""Riding out a failover: fresh connections for new transactions, host lists, poolers in front.

A mixin over the instrumented pools of :mod:`api.db.pool.pool` (their checkout and check-in
are untouched); :func:`cluster_class` gives the class ``connect()`` builds:

* **transaction start**: before the outermost ``BEGIN`` a connection the server has closed
  (its socket spoke unprompted and a ping fails) is replaced; when ``BEGIN`` itself meets a
  lost connection, or a demoted primary refuses ``BEGIN READ WRITE`` (``read_only``), the
  connection is dropped and the start retried on a fresh one, within ``DB_RETRY_MAX_ELAPSED``.
  Nothing has run in the transaction yet, so nothing is re-run; a failure *inside* a
  transaction reaches the application, always;
* **statements outside a transaction**: a dead connection is replaced before the statement
  is sent; a statement the server provably never ran is sent once more on a fresh connection: one a
  read-only server refused, or (``resend_unanswered``, on by default) one whose connection closed with
  no answer at all, which the engine says means the server never started it (PostgreSQL: a backend
  that is terminated or sees its postmaster die while running a statement says so before closing; a
  silent close means it was gone before reading it); any other failure reaches the application;
* **host lists** for drivers without them (PyMySQL): each host is tried in order;
* **poolers**: a PgBouncer that refuses startup options is detected at the first connect
  (the options are dropped and the connect repeated), or configured (``pooler=pgbouncer``);
  then each transaction sets the engine's per-transaction settings (``SET LOCAL
  statement_timeout``) right after ``BEGIN``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import peewee

from api.db.engines import engine_class
from api.db.error_handler import FATAL_CONFIGURATION, ErrorCategory, classify_error
from api.db.pool.events import DEAD, DISCARDED, emit
from api.db.pool.pool import (
    InstrumentedMySQLDatabase,
    InstrumentedPool,
    InstrumentedPostgresqlDatabase,
)

logger = logging.getLogger(__name__)

_EXCEPTION_WRAPPER: Any = vars(peewee)["__exception_wrapper__"]
# What makes a transaction start worth retrying on a fresh connection.
RETRY_BEGIN_ON = frozenset({ErrorCategory.CONNECTION_LOST, ErrorCategory.READ_ONLY})
BEGIN_PAUSE_FIRST = (
    0.05  # seconds before the second try of a transaction start; doubles up to the max
)
BEGIN_PAUSE_MAX = 1.0
_DRIVER_ERRORS = (peewee.DatabaseError, peewee.InterfaceError)
_pinned = threading.local()


@contextlib.contextmanager
def pinned_session(database: Any) -> Iterator[None]:
    """While this thread holds session state on its connection (a migration lock), never swap it silently.

    A statement whose connection died then fails (``connection_lost``) instead of running on a fresh
    connection: a migration must not go on without the session lock it took on the old one.
    """
    depth = getattr(_pinned, "depth", 0)
    _pinned.depth = depth + 1
    try:
        yield
    finally:
        _pinned.depth = depth


def session_pinned(database: Any) -> bool:
    """Whether this thread is inside :func:`pinned_session`."""
    return bool(getattr(_pinned, "depth", 0))


class FailoverMixin(InstrumentedPool):
    """Transaction starts and autocommit statements that survive a failover (module docstring)."""

    expects_primary = (
        False  # the URL asks for a writable member: BEGIN READ WRITE where the engine has it
    )
    pooler_detected: str | None = None  # how a pooler in front was found, None when it was not

    @property
    def pooled(self) -> bool:
        """A transaction pooler is in front (configured, or detected at connect)."""
        return self.pool_config.pooler == "pgbouncer" or self.pooler_detected is not None

    def pooler_report(self) -> str | None:
        """``configured`` / ``detected: ...`` / None, for health and preflight."""
        if self.pool_config.pooler == "pgbouncer":
            return "pgbouncer (configured)"
        return self.pooler_detected

    # ---------------------------------------------------------------- transaction start

    def begin(self, *args: Any, **kwargs: Any) -> None:
        # A re-begin after commit() inside a block stays on its connection; so does a pinned session.
        if self.transaction_depth() > 0 or session_pinned(self):
            self._begin_once(args, kwargs)
            return
        deadline = time.monotonic() + self.retry_config.max_elapsed
        pause = BEGIN_PAUSE_FIRST
        while True:
            self._replace_if_dead()
            try:
                self._begin_once(args, kwargs)
                return
            except _DRIVER_ERRORS as exc:
                info = classify_error(exc, self._engine_name())
                kept = getattr(self._state, "keep_connection", False)  # a session lock lives on it
                if kept or info.category not in RETRY_BEGIN_ON or time.monotonic() + pause > deadline:
                    raise
                logger.warning("pool %s: transaction start failed (%s: %s); retrying on a fresh connection",
                               self.target, info.category.value, info.message)  # fmt: skip
            self._discard_connection()
            time.sleep(pause)
            pause = min(pause * 2, BEGIN_PAUSE_MAX)

    def _begin_once(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        engine = engine_class(self)
        statement = engine.begin_read_write if self.expects_primary else None
        if statement is None:
            super().begin(*args, **kwargs)
        else:
            isolation = (args[0] if args else kwargs.get("isolation_level")) or getattr(
                self, "_isolation_level", None
            )
            if isolation:
                level = self._adapter.isolation_level_str(isolation)
                statement = f"BEGIN TRANSACTION ISOLATION LEVEL {level} READ WRITE"
            with _EXCEPTION_WRAPPER:
                self.cursor().execute(statement)
        settings = engine.transaction_settings(self.pool_config) if self.pooled else ""
        if settings:
            with _EXCEPTION_WRAPPER:
                self.cursor().execute(settings)

    # ---------------------------------------------------------------- statements

    def execute_sql(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        if self.in_transaction() or session_pinned(self):
            return super().execute_sql(sql, params, *args, **kwargs)
        self._replace_if_dead()
        try:
            return super().execute_sql(sql, params, *args, **kwargs)
        except _DRIVER_ERRORS as exc:
            if self.in_transaction() or not self._may_resend(exc):
                raise
            # The server never ran it (it refused it read-only, or closed the connection without a word
            # before reading it): once more, on a fresh connection.
            logger.warning(
                "pool %s: a statement outside a transaction was not run (%s); sending it once more "
                "on a fresh connection",
                self.target,
                classify_error(exc, self._engine_name()).message,
            )
            self._discard_connection()
            return super().execute_sql(sql, params, *args, **kwargs)

    def _may_resend(self, exc: BaseException) -> bool:
        """The statement provably did not run: refused by a read-only server, or unanswered (engine fact)."""
        info = classify_error(exc, self._engine_name())
        if info.category is ErrorCategory.READ_ONLY:
            return True
        return (info.category is ErrorCategory.CONNECTION_LOST and self.pool_config.resend_unanswered
                and engine_class(self).unanswered(exc))  # fmt: skip

    # ---------------------------------------------------------------- connections

    def _replace_if_dead(self) -> None:
        """Drop this thread's connection when the server closed it (no statement was sent on it yet)."""
        conn = self._state.conn
        if self._state.closed or conn is None or getattr(self._state, "keep_connection", False):
            return  # (kept: a session lock lives on it; its loss is reported, not papered over)
        if self._is_broken(conn) or (self._socket_readable(conn) and self._is_closed(conn)):
            logger.info(
                "pool %s: the server closed this thread's connection; a new one is opened",
                self.target,
            )
            self._discard_connection()

    def _discard_connection(self) -> None:
        """Close this thread's connection, count it lost and leave the thread without one."""
        conn = self._state.conn
        if conn is None:
            return
        with self._pool_lock:
            self._in_use.pop(self.conn_key(conn), None)
        self.counters.add("lost")
        emit(self, DISCARDED, conn, reason=DEAD)
        self._close_raw(conn)
        self._state.conn = None
        self._state.closed = True
        with self._pool_lock:
            self._wake()  # the freed slot goes to the oldest waiter

    def _open_raw(self) -> Any:
        try:
            return super()._open_raw()
        except Exception as exc:
            engine = engine_class(self)
            if self.pool_config.pooler == "none" or not engine.pooler_refusal(exc):
                raise
            with _OPTIONS_LOCK:
                dropped = engine.drop_pooled_startup_options(self.connect_params)
            if not dropped and self.pooler_detected is None:
                raise
            if self.pooler_detected is None:
                self.pooler_detected = "pgbouncer (detected: it refused startup options)"
                logger.warning("pool %s: a pooler in front refused startup options; they are not sent, and "
                               "each transaction sets them with SET LOCAL (set pooler=pgbouncer to skip this "
                               "probe)", self.target)  # fmt: skip
        return super()._open_raw()


_OPTIONS_LOCK = threading.Lock()


class HostListMixin(InstrumentedPool):
    """Connect to the first host of ``host=h1,h2`` / ``port=p1,p2`` that answers (drivers without lists)."""

    hosts: list[tuple[str, int | None]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = str(self.connect_params.get("host") or "").split(",")
        ports = str(self.connect_params.get("port") or "").split(",")
        if len(ports) == 1:
            ports = ports * len(names)
        self.hosts = [(host, int(port) if port else None) for host, port in zip(names, ports)]
        # Health and lag probes read connect_params: they reach the first host.
        self.connect_params["host"], port = self.hosts[0]
        if port is None:
            self.connect_params.pop("port", None)
        else:
            self.connect_params["port"] = port

    def host_list(self) -> list[tuple[str, int | None]]:
        """(host, port) pairs in the order they are tried."""
        return list(self.hosts)

    def _open_raw(self) -> Any:
        failure: BaseException | None = None
        for host, port in self.host_list():
            try:
                conn = self._connect_host(host, port)
            except Exception as exc:  # the next host is tried; configuration errors are not
                info = classify_error(exc, self._engine_name())
                if info.category in FATAL_CONFIGURATION:
                    raise
                logger.info("pool %s: host %s:%s did not answer (%s); trying the next one",
                            self.target, host, port, info.category.value)  # fmt: skip
                failure = exc
                continue
            try:
                self._init_session(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        assert failure is not None
        raise failure

    def _connect_host(self, host: str, port: int | None) -> Any:
        import pymysql

        params = {**self.connect_params, "host": host}
        if port is not None:
            params["port"] = port
        else:
            params.pop("port", None)
        return pymysql.connect(database=self.database, autocommit=True, **params)


class ClusterPostgresqlDatabase(FailoverMixin, InstrumentedPostgresqlDatabase):
    """The PostgreSQL pool ``connect()`` builds: instrumented, failover-aware."""


class ClusterMySQLDatabase(FailoverMixin, InstrumentedMySQLDatabase):
    """The MySQL / MariaDB pool ``connect()`` builds: instrumented, failover-aware."""


class HostListMySQLDatabase(HostListMixin, ClusterMySQLDatabase):
    """``ClusterMySQLDatabase`` over a list of hosts tried in order."""


_CLUSTER_CLASSES: dict[type[InstrumentedPool], type[FailoverMixin]] = {
    InstrumentedPostgresqlDatabase: ClusterPostgresqlDatabase,
    InstrumentedMySQLDatabase: ClusterMySQLDatabase,
}
_HOST_LIST_CLASSES: dict[type[InstrumentedPool], type[FailoverMixin]] = {
    InstrumentedMySQLDatabase: HostListMySQLDatabase,
}


def cluster_class(base: type[InstrumentedPool], *, host_list: bool = False) -> type[FailoverMixin]:
    """The failover-aware class over ``base``, trying a host list itself when ``host_list``."""
    table = _HOST_LIST_CLASSES if host_list else _CLUSTER_CLASSES
    try:
        return table[base]
    except KeyError:
        raise TypeError(f"no cluster-aware pool for {base.__name__}") from None
