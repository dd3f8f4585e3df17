"""Database health: a bounded check of the database, the pool, the migrations and pgvector.

How the check stays within its time bound (``timeout``, 0.8 s by default), even when
the database hangs:

* it never borrows from the application's pool: a checkout could wait the pool's
  acquire timeout (30 s) and open connections with the retry budget. Pool
  exhaustion is read from the pool's statistics instead (threads waiting, new
  acquisition timeouts), without queueing;
* it keeps one small *probe connection* of its own (a plain, unpooled Peewee
  database with the application's driver options and short timeouts: a 2 s connect
  timeout, a 1 s statement timeout; one attempt, no retry). A broken probe
  connection is closed and opened again by the next check;
* the database work runs in a worker thread and the caller waits for it at most
  ``timeout``: a server that stopped answering (a ``SIGSTOP``-ed PostgreSQL, a
  network black hole) yields an ``unhealthy`` answer on time, while the worker stays
  blocked in the driver. Checks are single-flight: while one worker is out, no other
  starts; callers wait for the one in flight, or get the timed-out answer;
* results are cached for ``cache_ttl`` seconds; a stale cache is refreshed by one
  check however many callers arrive at once.

Status rules (the same table is in docs/HEALTH_AND_METRICS.md):

* ``unhealthy``: the database does not answer (error or timeout), a migration
  ``failed``, the migration state cannot be read, or the pool is exhausted (all
  connections in use and threads waiting, or an acquisition timed out since the
  previous check);
* ``degraded``: pool utilization at or above ``POOL_WARNING_PERCENT``, the round
  trip slower than ``latency_threshold_ms``, or migrations pending / running;
* ``healthy`` otherwise.

Ready (:attr:`DatabaseHealth.ready`): the database answers, nothing is pending,
running or failed, and the pool is not exhausted; on a Galera node also ``wsrep_ready=ON``
and ``Synced`` (an engine fact: ``MemberRole.not_ready``); on a replica only with
``ready_on_replica`` (the default). The member's role (primary, replica with its lag, Galera
node with its state and cluster size), a pooler in front and, for a routing database, every
member are reported in ``cluster``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import peewee

from api.db.engines import db_type, engine_for
from api.db.engines.info import server_info
from api.db.engines.state import database_label, state_of
from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError, IncompatibleExtensionError
from api.db.migrate.declarations import MigrationLike, plan_migrations
from api.db.migrate.status import migration_status, pending_migrations
from api.db.migrate.tracker import APPLIED, FAILED, RUNNING, MigrationTracker
from api.db.pool import forks
from api.db.pool.diagnostics import PoolDiagnostics
from api.db.redact import redact_text
from api.db.schema.pgvector import check_pgvector

logger = logging.getLogger(__name__)

HEALTHY = "healthy"
DEGRADED = "degraded"
UNHEALTHY = "unhealthy"
STATUSES = (HEALTHY, DEGRADED, UNHEALTHY)

DEFAULT_TIMEOUT = 0.8  # seconds a caller waits for the database part of a check
DEFAULT_LATENCY_THRESHOLD_MS = 100.0
PROBE_CONNECT_TIMEOUT = 2  # seconds; libpq takes whole seconds, at least 2
PROBE_STATEMENT_TIMEOUT = 1.0  # seconds a probe statement may run on the server
PROBE_IO_TIMEOUT = 2.0  # seconds; MySQL client-side read/write timeout of the probe connection


@dataclass
class DatabaseHealth:
    """The outcome of one check. ``error`` and ``server_version`` are shown only on request."""

    status: str
    reachable: bool
    latency_ms: float | None  # one SELECT 1 round trip on the probe connection
    pool_active: int
    pool_idle: int
    pool_max: int
    pool_waiting: int
    pool_utilization_percent: float
    pool_exhausted: bool
    pgvector_available: bool
    pgvector_version: str | None
    migrations_checked: bool  # False when no migrations were declared to the check
    migrations_known: bool = True  # False when the migration state could not be read (database down)
    # declared, not applied (running ones included)
    migrations_pending: list[str] = field(default_factory=list)
    migrations_running: list[str] = field(default_factory=list)
    migrations_failed: list[str] = field(default_factory=list)
    migrations_applied: int = 0  # history rows with status success or skipped
    last_migration_duration_ms: float | None = None  # of the most recently recorded migration
    reasons: list[str] = field(default_factory=list)  # why the status is not healthy; never error text
    error: str | None = None  # classified, redacted driver message (a detail)
    server_version: str | None = None  # a detail
    engine: str = ""
    flavour: str = ""  # postgres, mysql, mariadb, sqlite once the server was read
    role: dict[str, Any] | None = None  # MemberRole.as_dict() of the member the probe reached
    pooler: str | None = None  # how a pooler in front was configured or detected
    members: list[dict[str, Any]] = field(default_factory=list)  # routing databases: primary and replicas
    not_ready: str | None = None  # why the member's role keeps it out of traffic
    check_duration_ms: float = 0.0  # the whole database part of the check
    checked_at: float = 0.0  # time.time() when the check finished

    @property
    def ready(self) -> bool:
        """Fit for traffic: the database answers, no migration pending/running/failed, pool not exhausted."""
        return (
            self.reachable
            and not self.migrations_pending
            and not self.migrations_running
            and not self.migrations_failed
            and not self.pool_exhausted
            and self.error is None
            and self.not_ready is None
        )

    def to_dict(self, *, details: bool = False) -> dict[str, Any]:
        """Components as JSON-ready dicts; without ``details`` no error text and no server version."""
        database: dict[str, Any] = {
            "status": "up" if self.reachable else "down",
            "engine": self.engine,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 3),
        }
        if details:
            database["server_version"] = self.server_version
            database["error"] = self.error
        return {
            "status": self.status,
            "ready": self.ready,
            "reasons": list(self.reasons),
            "checked_at": round(self.checked_at, 3),
            "check_duration_ms": round(self.check_duration_ms, 3),
            "database": database,
            "pool": {
                "active": self.pool_active,
                "idle": self.pool_idle,
                "max": self.pool_max,
                "waiting": self.pool_waiting,
                "utilization_percent": self.pool_utilization_percent,
                "exhausted": self.pool_exhausted,
            },
            "migrations": self._migrations_dict(),
            "pgvector": {
                "available": self.pgvector_available,
                **({"version": self.pgvector_version} if details else {}),
            },
            "cluster": self._cluster_dict(details),
        }

    def _migrations_dict(self) -> dict[str, Any]:
        """The migration component; ``state: unknown`` and nulls when it could not be read."""
        if not self.migrations_known:
            return {"checked": self.migrations_checked, "state": "unknown", "pending": None, "running": None,
                    "failed": None, "applied": None, "last_duration_ms": None}  # fmt: skip
        return {
            "checked": self.migrations_checked,
            "state": "known",
            "pending": list(self.migrations_pending),
            "running": list(self.migrations_running),
            "failed": list(self.migrations_failed),
            "applied": self.migrations_applied,
            "last_duration_ms": self.last_migration_duration_ms,
        }

    def _cluster_dict(self, details: bool) -> dict[str, Any]:
        """Role, pooler and members; member URLs and errors only with ``details``."""
        hidden = () if details else ("url", "error")
        members = [{k: v for k, v in member.items() if k not in hidden} for member in self.members]
        return {**(self.role or {"role": "unknown"}), "pooler": self.pooler, "members": members}


class _DatabaseFacts:
    """What the worker learned from the database (filled in as far as it got)."""

    def __init__(self) -> None:
        self.reachable = False
        self.latency_ms: float | None = None
        self.server_version: str | None = None
        self.flavour = ""
        self.pending: list[str] = []
        self.running: list[str] = []
        self.failed: list[str] = []
        self.applied = 0
        self.last_duration_ms: float | None = None
        self.migrations_error: str | None = None
        self.migrations_read = False  # the history (and declared state) was read
        self.pgvector_available = False
        self.pgvector_version: str | None = None
        self.pgvector_problem = False
        self.error: str | None = None
        self.role: Any = None  # MemberRole
        self.pooler: str | None = None
        self.timed_out = False
        self.duration_ms = 0.0


def probe_database(db: peewee.Database) -> peewee.Database:
    """A plain (unpooled) Peewee database like ``db`` with the probe's short timeouts; not connected yet.

    ``thread_safe=False``: the connection is shared by the successive worker threads of a
    checker, which never overlap (single-flight).
    """
    params: dict[str, Any] = dict(getattr(db, "connect_params", {}) or {})
    probe = engine_for(db).probe_database(
        params,
        connect_timeout=PROBE_CONNECT_TIMEOUT,
        statement_timeout=PROBE_STATEMENT_TIMEOUT,
        io_timeout=PROBE_IO_TIMEOUT,
    )
    return db if probe is None else probe


class _Run:
    """One check in flight in a worker thread."""

    __slots__ = ("done", "started", "health", "timeout_health")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.started = time.monotonic()
        self.health: DatabaseHealth | None = None  # set by the worker when it finishes
        self.timeout_health: DatabaseHealth | None = None  # set by the first caller that stopped waiting


class HealthChecker:
    """Cached, single-flight, time-bounded health checks of one database (see the module docstring)."""

    def __init__(
        self,
        db: peewee.Database,
        migrations: Iterable[MigrationLike] | None = None,
        *,
        cache_ttl: float = 5.0,
        timeout: float = DEFAULT_TIMEOUT,
        latency_threshold_ms: float = DEFAULT_LATENCY_THRESHOLD_MS,
        ready_on_replica: bool = True,
    ) -> None:
        for name, value, low in (("cache_ttl", cache_ttl, 0.0), ("timeout", timeout, 0.001),
                                 ("latency_threshold_ms", latency_threshold_ms, 0.0)):  # fmt: skip
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
                or value < low
            ):
                raise ConfigurationError(f"{name} is {value!r}: expected a number of at least {low:g}")
        self.db: Any = db
        self.engine = db_type(db)
        # Declarations are checked here, once, so a bad list fails when the app is built, not in a probe.
        self.migrations = None if migrations is None else plan_migrations(migrations)
        self.cache_ttl = float(cache_ttl)
        self.timeout = float(timeout)
        self.latency_threshold_ms = float(latency_threshold_ms)
        self.ready_on_replica = bool(ready_on_replica)
        self.probe_db: Any = probe_database(db)
        self._backend: tuple[Any, Any] | None = None  # (probe connection, backend id) of the last check
        self.checks_total = 0  # database checks started (not cache hits)
        self.last: DatabaseHealth | None = None
        self._cached_at = -math.inf  # monotonic
        self._lock = threading.Lock()
        self._running: _Run | None = None
        self._tracker: MigrationTracker | None = None
        self._closed = False
        self._flavour_name = ""
        self._failing: str | None = None  # the error of the current outage, logged once
        self._timeouts_seen = self._pool_timeouts()
        self.started = time.monotonic()  # this process's checker (reset in a forked child): the uptime
        forks.register(self)

    @property
    def uptime_seconds(self) -> float:
        """Seconds since this checker started in this process."""
        return time.monotonic() - self.started

    def _after_fork_in_child(self) -> None:
        """In a forked child: drop the inherited probe connection unclosed, forget the parent's run, cache."""
        probe = self.probe_db
        if probe is not self.db and probe._state.conn is not None:
            forks.detach_descriptors([engine_for(self.db).connection_fileno(probe._state.conn)])
            probe._state = type(probe._state)()
        self._lock = threading.Lock()
        self._running = None
        self.last, self._cached_at = None, -math.inf
        self.checks_total = 0
        self.started = time.monotonic()
        self._timeouts_seen = self._pool_timeouts()

    # ------------------------------------------------------------------ public

    def check(self, max_age: float | None = None) -> DatabaseHealth:
        """The cached result if younger than ``max_age`` (default ``cache_ttl``), else a fresh check.

        Returns within ``timeout`` (plus the pool-statistics read) whatever the database does.
        """
        ttl = self.cache_ttl if max_age is None else max_age
        arrived = time.monotonic()
        cached = self.last
        if cached is not None and arrived - self._cached_at < ttl:
            return cached
        with self._lock:
            cached = self.last
            if cached is not None and time.monotonic() - self._cached_at < ttl:
                return cached
            run = self._running
            if run is None:
                run = self._running = _Run()
                self.checks_total += 1
                worker = threading.Thread(
                    target=self._work, args=(run,), name="api.db-health-probe", daemon=True
                )
                worker.start()
        if run.done.wait(max(0.0, self.timeout - (time.monotonic() - arrived))) and run.health is not None:
            return run.health
        with self._lock:  # one timed-out verdict per run, shared by every caller that waited on it
            if run.timeout_health is None:
                facts = _DatabaseFacts()
                facts.timed_out = True
                facts.duration_ms = (time.monotonic() - run.started) * 1e3
                facts.error = f"the database did not answer within {self.timeout:g}s"
                run.timeout_health = self._assess(facts)
                self._remember(run.timeout_health)
            return run.timeout_health

    def _remember(self, health: DatabaseHealth) -> None:
        """Cache ``health`` unless a newer result is cached already (call holding ``_lock``)."""
        if self.last is None or health.checked_at >= self.last.checked_at:
            self.last = health
            self._cached_at = time.monotonic()

    async def check_async(self, max_age: float | None = None) -> DatabaseHealth:
        """:meth:`check` for asyncio: the waiting happens in a thread, never on the event loop."""
        return await asyncio.to_thread(self.check, max_age)

    def close(self) -> None:
        """Close the probe connection now, or, if a worker is blocked in the driver, when it returns."""
        if self.probe_db is self.db:
            return
        with self._lock:
            self._closed = True
            busy = self._running is not None
        if not busy:
            self._drop_probe_connection()

    # ------------------------------------------------------------------ worker

    def _work(self, run: _Run) -> None:
        started = time.perf_counter()
        facts = _DatabaseFacts()
        try:
            self._probe(facts)
        except Exception as exc:  # any failure is the answer: classified, logged, reported as unreachable
            info = classify_error(exc, self.engine)
            facts.reachable = False
            facts.error = redact_text(f"{info.category.value}: {info.message}")
            self._log_failure(facts.error)
            self._drop_probe_connection()
        finally:
            # Whatever happened (even a BaseException), the run ends: callers must never wait on it forever.
            facts.duration_ms = (time.perf_counter() - started) * 1e3
            with self._lock:
                try:
                    run.health = self._assess(facts)
                    self._remember(run.health)
                finally:
                    self._running = None
                    closed = self._closed
            run.done.set()
        if closed:
            self._drop_probe_connection()
        if run.started + self.timeout < time.monotonic():
            logger.info("health check of %s finished late, after %.0f ms", _name(self.db), facts.duration_ms)

    def _log_failure(self, error: str | None) -> None:
        """A failure at WARNING once per outage (again when the error changes); its repeats at DEBUG."""
        if error is None:
            if self._failing is not None:
                logger.info("health check of %s: the database answers again", _name(self.db))
            self._failing = None
            return
        level = logging.DEBUG if error == self._failing else logging.WARNING
        logger.log(level, "health check of %s failed: %s", _name(self.db), error,
                   extra={"event": "health_check", "check": "database", "status": "fail",
                          "engine": self.engine})
        self._failing = error

    def _probe(self, facts: _DatabaseFacts) -> None:
        probe = self.probe_db
        if probe is not self.db:
            probe.connect(reuse_if_open=True)
        begin = time.perf_counter()
        probe.execute_sql("SELECT 1").fetchone()
        facts.latency_ms = (time.perf_counter() - begin) * 1e3
        facts.reachable = True
        self._log_failure(None)
        facts.server_version = _version_text(getattr(probe, "server_version", None))
        facts.flavour = self._flavour(probe)
        self._read_role(probe, facts)
        try:
            self._read_migrations(probe, facts)
        except peewee.DatabaseError as exc:  # the database answers but the history cannot be read
            info = classify_error(exc, self.engine)
            facts.migrations_error = info.category.value
            facts.error = redact_text(f"{info.category.value}: {info.message}")
            logger.warning("health check of %s: migration state unreadable (%s): %s",
                           _name(self.db), info.category.value, info.message)  # fmt: skip
        if engine_for(self.db).has_pgvector:
            self._read_pgvector(probe, facts)

    def _flavour(self, probe: Any) -> str:
        """The server product, read once per checker (one more round trip on the first check)."""
        if not self._flavour_name:
            try:
                self._flavour_name = server_info(probe).flavour
            except peewee.DatabaseError as exc:  # the next check asks again
                logger.debug("health check of %s: server product unknown: %s", _name(self.db), exc)
        return self._flavour_name

    def _read_role(self, probe: Any, facts: _DatabaseFacts) -> None:
        """The member's role, and a pooler: configured, detected at connect, or seen moving the backend."""
        engine = engine_for(self.db)
        report = getattr(self.db, "pooler_report", None)
        facts.pooler = report() if report is not None else None
        conn = probe.connection()
        try:
            with contextlib.closing(conn.cursor()) as cursor:
                facts.role = engine.read_role(cursor)
                backend = engine.backend_id(cursor)
        except Exception as exc:  # a role the server will not say (privileges): reported unknown
            info = classify_error(exc, self.engine)
            logger.info("health check of %s: role unreadable (%s): %s", _name(self.db), info.category.value,
                        info.message)  # fmt: skip
            _rollback_quietly(conn)
            return
        previous, self._backend = self._backend, (conn, backend)
        if facts.pooler is None and previous is not None and previous[0] is conn and previous[1] != backend:
            facts.pooler = "detected: the server session changed between two checks on one connection"

    def _read_pgvector(self, probe: Any, facts: _DatabaseFacts) -> None:
        try:
            result = check_pgvector(probe)
        except IncompatibleExtensionError as exc:  # a known-bad version is installed: not usable
            logger.warning("health check of %s: %s", _name(self.db), exc)
            facts.pgvector_problem = True
        else:
            facts.pgvector_available = result.installed_version is not None
            facts.pgvector_version = result.installed_version

    def _read_migrations(self, probe: Any, facts: _DatabaseFacts) -> None:
        if self.migrations is not None:
            self._read_declared(probe, self.migrations, facts)
        if self._tracker is None:
            self._tracker = MigrationTracker(probe)  # builds its models once, not at every check
        history = self._tracker.get_migration_history()  # oldest first; empty without a table
        _read_history(history, facts, undeclared=self.migrations is None)
        facts.migrations_read = True

    @staticmethod
    def _read_declared(probe: Any, migrations: list[Any], facts: _DatabaseFacts) -> None:
        """Pending, running and failed names among the declared migrations."""
        facts.pending = pending_migrations(probe, migrations)  # one round trip when nothing is pending
        if not facts.pending:
            return
        lines = [line for line in migration_status(probe, migrations) if line.declared]
        facts.running.extend(line.name for line in lines if line.status == RUNNING)
        facts.failed.extend(line.name for line in lines if line.status == FAILED)

    def _drop_probe_connection(self) -> None:
        if self.probe_db is self.db or self.probe_db.is_closed():
            return
        try:
            self.probe_db.close()
        except Exception as exc:  # the connection is broken already; closing it is best effort
            info = classify_error(exc, self.engine)
            logger.debug(
                "health probe of %s: close failed (%s): %s", _name(self.db), info.category.value, info.message
            )

    # ------------------------------------------------------------------ verdict

    def _pool_timeouts(self) -> int:
        return int(PoolDiagnostics(self.db).get_pool_stats()["acquisition_timeouts_total"])

    def _assess(self, facts: _DatabaseFacts) -> DatabaseHealth:
        diagnostics = PoolDiagnostics(self.db)
        stats = diagnostics.get_pool_stats()
        new_timeouts = stats["acquisition_timeouts_total"] - self._timeouts_seen
        self._timeouts_seen = stats["acquisition_timeouts_total"]
        exhausted = bool(stats["max"]) and (
            (stats["active"] >= stats["max"] and stats["waiting"] > 0) or new_timeouts > 0
        )
        unhealthy = self._unhealthy_reasons(facts) + _exhaustion_reasons(exhausted, new_timeouts, stats)
        degraded = _pool_degraded(exhausted, stats, diagnostics.config.warning_percent)
        degraded += self._degraded_reasons(facts)
        not_ready = self._role_not_ready(facts)
        if not_ready:
            degraded.append(not_ready)
        status = UNHEALTHY if unhealthy else DEGRADED if degraded else HEALTHY
        return DatabaseHealth(
            status=status,
            reachable=facts.reachable,
            latency_ms=facts.latency_ms,
            pool_active=stats["active"],
            pool_idle=stats["idle"],
            pool_max=stats["max"],
            pool_waiting=stats["waiting"],
            pool_utilization_percent=stats["utilization_percent"],
            pool_exhausted=exhausted,
            pgvector_available=facts.pgvector_available,
            pgvector_version=facts.pgvector_version,
            migrations_checked=self.migrations is not None,
            migrations_known=facts.migrations_read,
            migrations_pending=list(facts.pending),
            migrations_running=list(facts.running),
            migrations_failed=list(facts.failed),
            migrations_applied=facts.applied,
            last_migration_duration_ms=facts.last_duration_ms,
            reasons=unhealthy + degraded,
            error=facts.error,
            server_version=facts.server_version,
            engine=self.engine,
            flavour=facts.flavour,
            role=facts.role.as_dict() if facts.role is not None else None,
            pooler=facts.pooler,
            members=_members(self.db),
            not_ready=not_ready,
            check_duration_ms=facts.duration_ms,
            checked_at=time.time(),
        )

    def _role_not_ready(self, facts: _DatabaseFacts) -> str | None:
        """Why the role keeps the member out of traffic (Galera state; a replica, ready_on_replica off)."""
        role = facts.role
        if role is None:
            return None
        if role.not_ready:
            return str(role.not_ready)
        if role.role == "replica" and not self.ready_on_replica:
            return "member is a replica (ready_on_replica is off)"
        return None

    def _unhealthy_reasons(self, facts: _DatabaseFacts) -> list[str]:
        """Why the database part is unhealthy: no answer, unreadable state, failed migrations."""
        reasons: list[str] = []
        if facts.timed_out:
            reasons.append(f"database did not answer within {self.timeout:g}s")
        elif not facts.reachable:
            reasons.append("database unreachable")
        if facts.migrations_error:
            reasons.append("migration state unreadable")
        if facts.failed:
            reasons.append(f"{len(facts.failed)} migration(s) failed")
        return reasons

    def _degraded_reasons(self, facts: _DatabaseFacts) -> list[str]:
        """Why the database part is degraded: unsafe pgvector, slow round trip, migrations not done."""
        reasons: list[str] = []
        if facts.pgvector_problem:
            reasons.append("pgvector version known to be unsafe")
        if facts.latency_ms is not None and facts.latency_ms > self.latency_threshold_ms:
            reasons.append(f"latency {facts.latency_ms:.0f} ms > {self.latency_threshold_ms:g} ms")
        started = set(facts.running) | set(facts.failed)
        pending_only = [name for name in facts.pending if name not in started]
        if facts.running:
            reasons.append(f"{len(facts.running)} migration(s) running")
        if pending_only:
            reasons.append(f"{len(pending_only)} migration(s) pending")
        return reasons


def _read_history(history: list[Any], facts: _DatabaseFacts, *, undeclared: bool) -> None:
    """Applied count and last duration from the history; running / failed too when nothing was declared."""
    facts.applied = sum(1 for row in history if row.status in APPLIED)
    finished = [row for row in history if row.duration_ms is not None]
    facts.last_duration_ms = finished[-1].duration_ms if finished else None
    if undeclared:
        facts.running = [row.migration_name for row in history if row.status == RUNNING]
        facts.failed = [row.migration_name for row in history if row.status == FAILED]


def _exhaustion_reasons(exhausted: bool, new_timeouts: int, stats: dict[str, Any]) -> list[str]:
    """``pool exhausted: ...`` when it is, naming the timeouts or the waiting threads."""
    if not exhausted:
        return []
    if new_timeouts > 0:
        return [f"pool exhausted: {new_timeouts} acquisition timeout(s)"]
    return [f"pool exhausted: {stats['waiting']} thread(s) waiting for a connection"]


def _pool_degraded(exhausted: bool, stats: dict[str, Any], warning_percent: float) -> list[str]:
    """``pool utilization ...`` when a pool that is not exhausted is at or above the warning level."""
    if exhausted or not stats["max"] or stats["utilization_percent"] < warning_percent:
        return []
    return [f"pool utilization {stats['utilization_percent']:g}% >= {warning_percent:g}%"]


def _members(db: Any) -> list[dict[str, Any]]:
    """Every member of a routing database (from its last replica poll: no round trip); empty otherwise."""
    members = getattr(db, "members", None)
    return list(members()) if callable(members) else []


def _rollback_quietly(conn: Any) -> None:
    """End a failed read's transaction on the probe connection, so the next statement can run."""
    try:
        conn.rollback()
    except Exception as exc:  # a broken probe connection is replaced by the next check
        logger.debug("health probe rollback failed: %s", classify_error(exc).message)


def _version_text(version: Any) -> str | None:
    """peewee's ``server_version``: a tuple (MySQL, SQLite) or libpq's integer (PostgreSQL 180001 -> 18.1)."""
    if isinstance(version, tuple):
        return ".".join(map(str, version))
    if isinstance(version, int) and version > 0:
        major, rest = divmod(version, 10000)
        return f"{major}.{rest}" if major >= 10 else f"{major}.{rest // 100}.{rest % 100}"
    return None


def _name(db: Any) -> str:
    return database_label(db)


def _checker_for(db: peewee.Database, migrations: Iterable[MigrationLike] | None, timeout: float,
                 latency_threshold_ms: float) -> HealthChecker:  # fmt: skip
    """The checker :func:`check_database_health` keeps on ``db``, so its probe and single-flight last."""
    items = None if migrations is None else list(migrations)
    key = (
        None if items is None else tuple(m.name for m in plan_migrations(items)),
        timeout,
        latency_threshold_ms,
    )
    with _REGISTRY_LOCK:
        state = state_of(db)
        checkers: dict[Any, HealthChecker] = state.health_checkers
        if not checkers:
            state.on_close.append(functools.partial(_close_checkers, checkers))
        checker = checkers.get(key)
        if checker is None:
            checker = checkers[key] = HealthChecker(
                db, items, cache_ttl=0.0, timeout=timeout, latency_threshold_ms=latency_threshold_ms
            )
        return checker


_REGISTRY_LOCK = threading.Lock()


def _close_checkers(checkers: dict[Any, HealthChecker]) -> None:
    for checker in list(checkers.values()):
        checker.close()


def check_database_health(
    db: peewee.Database,
    migrations: Iterable[MigrationLike] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    latency_threshold_ms: float = DEFAULT_LATENCY_THRESHOLD_MS,
) -> DatabaseHealth:
    """Check ``db`` now (no cache) within ``timeout`` s: reachability, latency, pool, migrations, pgvector."""
    return _checker_for(db, migrations, timeout, latency_threshold_ms).check(max_age=0.0)


async def check_database_health_async(
    db: peewee.Database,
    migrations: Iterable[MigrationLike] | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    latency_threshold_ms: float = DEFAULT_LATENCY_THRESHOLD_MS,
) -> DatabaseHealth:
    """:func:`check_database_health` for asyncio: the event loop never blocks on the database."""
    checker = _checker_for(db, migrations, timeout, latency_threshold_ms)
    return await checker.check_async(max_age=0.0)
