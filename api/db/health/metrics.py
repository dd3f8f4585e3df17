"""Prometheus metrics of one database, in one process or summed over the worker processes of a server.

Every family carries a ``database`` label (the database name), so several databases share one
``/metrics``; ``api_db_info{engine, flavour, version, database}`` names the server.

*One process* (no ``PROMETHEUS_MULTIPROC_DIR``): a custom collector computes everything at scrape
time from the counters the pool keeps anyway (:meth:`PoolDiagnostics.get_pool_stats`, the
acquire-wait histogram of :class:`api.db.pool.pool.PoolCounters`) and from the health checker's
cached result, in a :class:`prometheus_client.CollectorRegistry` of its own.

*Several processes* (gunicorn, uWSGI, ``uvicorn --workers``; ``PROMETHEUS_MULTIPROC_DIR`` set to an
empty directory shared by the workers): a scrape reaches one worker, which alone cannot know the
others' counters. Each process therefore mirrors its pool and query counters into
``prometheus_client``'s multiprocess files (:class:`ProcessExporter`, a named thread syncing every
second, and once more before each scrape it answers), and any worker's ``/metrics`` reads every
process's file through ``MultiProcessCollector``: totals are the sum over processes, past and
present, so they never run backwards. Connection gauges are summed over live processes, the
utilization ratio is the highest of any live process (each has its own pool). Database, migration
and health numbers describe the database, not the process: the answering worker computes them.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.multiprocess import mark_process_dead as _mark_process_dead

from api.db.health.checks import STATUSES, DatabaseHealth, HealthChecker
from api.db.pool import forks
from api.db.pool.diagnostics import PoolDiagnostics
from api.db.pool.pool import WAIT_BUCKETS, InstrumentedPool

logger = logging.getLogger(__name__)

PREFIX = "api_db_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SYNC_INTERVAL = 1.0  # seconds between two syncs of a process's counters into the multiprocess files

# (metric name without prefix, get_pool_stats key, help) for gauges and counters read straight from the stats.
POOL_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("pool_connections_max", "max",
     "Largest number of connections the pool may hold (POOL_MAX_CONNECTIONS)."),
    ("pool_connections_min", "min", "Connections the pool keeps open (POOL_MIN_CONNECTIONS)."),
    ("pool_connections_active", "active", "Connections checked out of the pool now."),
    ("pool_connections_idle", "idle", "Open connections waiting in the pool now."),
    ("pool_waiting_threads", "waiting", "Threads waiting for a free connection now."),
)
POOL_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("pool_acquisitions", "acquisitions_total", "Connections handed out by the pool."),
    ("pool_acquisition_timeouts", "acquisition_timeouts_total",
     "Checkouts that gave up after POOL_ACQUIRE_TIMEOUT."),
    ("pool_connections_created", "connections_created_total", "Connections opened by the pool."),
    ("pool_connections_closed", "connections_closed_total", "Connections closed by the pool."),
    ("pool_connections_lost", "connections_lost_total", "Connections found broken and discarded."),
    ("pool_connections_reclaimed", "connections_reclaimed_total",
     "Connections taken back from threads that ended."),
    ("pool_leaks_detected", "leaks_detected_total", "Checkouts held longer than POOL_LEAK_THRESHOLD."),
    ("queries", "queries_total", "Statements executed (query monitoring on)."),
    ("slow_queries", "slow_queries_total", "Statements slower than DB_SLOW_QUERY_MS."),
    ("query_errors", "query_errors_total", "Statements that raised."),
)
UTILIZATION_DOC = "Active connections over the maximum (0-1); with several processes, the highest of any."
WAIT_DOC = "Time a checkout waited for a connection."
CHECKS_DOC = "Health checks that queried the database (not cache hits)."
LABELS = ["database"]


def multiprocess_dir() -> str | None:
    """``$PROMETHEUS_MULTIPROC_DIR`` (multiprocess mode), else None."""
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()) or None


def database_name(db: Any) -> str:
    """The ``database`` label of ``db``: its database name (a SQLite file's base name)."""
    name = str(getattr(db, "database", "") or "")
    return os.path.basename(name) if os.sep in name else name


# ---------------------------------------------------------------- one process


class DatabaseCollector:
    """A ``prometheus_client`` collector for one :class:`~api.db.health.checks.HealthChecker` and its db.

    ``pool=False`` leaves out the pool, query and check counters (multiprocess mode reads them from
    the processes' files instead). ``details=False`` leaves the ``version`` label of ``api_db_info``
    empty, as ``/health/detailed`` leaves out the server version without ``expose_details``.
    """

    def __init__(self, checker: HealthChecker, *, pool: bool = True, details: bool = True) -> None:
        self.checker = checker
        self.pool = pool
        self.details = details
        self.label = database_name(checker.db)

    def collect(self) -> Iterator[Metric]:
        health = self.checker.check()  # first: cached for the checker's TTL, else counted in health_checks
        if self.pool:
            yield from self._pool_metrics()
        yield from self._health_metrics(health)

    def _pool_metrics(self) -> Iterator[Metric]:
        db: Any = self.checker.db
        stats = PoolDiagnostics(db).get_pool_stats()
        for name, key, doc in POOL_GAUGES:
            yield self._gauge(name, doc, stats[key])
        yield self._gauge("pool_utilization_ratio", UTILIZATION_DOC, stats["utilization_percent"] / 100)
        for name, key, doc in POOL_COUNTERS:
            counter = CounterMetricFamily(PREFIX + name, doc, labels=LABELS)
            counter.add_metric([self.label], stats[key])
            yield counter
        checks = CounterMetricFamily(PREFIX + "health_checks", CHECKS_DOC, labels=LABELS)
        checks.add_metric([self.label], self.checker.checks_total)
        yield checks
        yield self._wait_histogram(db)
        yield from member_metrics(db, self.label)

    def _wait_histogram(self, db: Any) -> Metric:
        if isinstance(db, InstrumentedPool):
            buckets, total_wait, _count = db.counters.wait_histogram()
        else:
            buckets, total_wait = [(math.inf, 0)], 0.0
        family = HistogramMetricFamily(PREFIX + "pool_acquire_wait_seconds", WAIT_DOC, labels=LABELS)
        family.add_metric([self.label], [(_le(bound), count) for bound, count in buckets], total_wait)
        return family

    def _health_metrics(self, health: DatabaseHealth) -> Iterator[Metric]:
        info = GaugeMetricFamily(PREFIX + "info",
                                 "The database server: engine, flavour and version (always 1).",
                                 labels=["engine", "flavour", "version", "database"])  # fmt: skip
        version = (health.server_version or "") if self.details else ""
        info.add_metric([health.engine, health.flavour, version, self.label], 1)
        yield info
        yield self._gauge(
            "up", "1 when the database answered the last health check.", 1 if health.reachable else 0
        )
        status = GaugeMetricFamily(PREFIX + "health_status", "1 for the status of the last health check.",
                                   labels=["status", "database"])  # fmt: skip
        for name in STATUSES:
            status.add_metric([name, self.label], 1 if health.status == name else 0)
        yield status
        yield self._gauge("ready", "1 when the last health check found the database ready for traffic.",
                          1 if health.ready else 0)  # fmt: skip
        latency = math.nan if health.latency_ms is None else health.latency_ms / 1e3
        yield self._gauge("health_check_latency_seconds",
                          "SELECT 1 round trip of the last health check (NaN if none).",
                          latency)  # fmt: skip
        yield self._gauge("health_check_duration_seconds", "Duration of the last health check.",
                          health.check_duration_ms / 1e3)  # fmt: skip
        yield self._gauge(
            "health_check_timestamp_seconds", "Unix time the last health check finished.", health.checked_at
        )
        yield from self._migration_metrics(health)
        yield self._gauge("pgvector_available", "1 when the pgvector extension is installed.",
                          1 if health.pgvector_available else 0)  # fmt: skip

    def _migration_metrics(self, health: DatabaseHealth) -> Iterator[Metric]:
        """Migration gauges; NaN when the state could not be read (the database down), never a false 0."""
        known = health.migrations_known
        started = set(health.migrations_running) | set(health.migrations_failed)
        pending = [n for n in health.migrations_pending if n not in started]
        values = (
            ("migrations_applied", "Migrations recorded success or skipped (NaN: unknown).",
             health.migrations_applied),
            ("migrations_pending", "Declared migrations not applied, running or failed (NaN: unknown).",
             len(pending)),
            ("migrations_running", "Migrations recorded running (NaN: unknown).",
             len(health.migrations_running)),
            ("migrations_failed", "Migrations recorded failed (NaN: unknown).",
             len(health.migrations_failed)),
        )
        for name, doc, value in values:
            yield self._gauge(name, doc, value if known else math.nan)
        last = health.last_migration_duration_ms
        yield self._gauge("last_migration_duration_seconds",
                          "Duration of the most recently recorded migration (NaN if none or unknown).",
                          math.nan if last is None or not known else last / 1e3)  # fmt: skip

    def _gauge(self, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=LABELS)
        family.add_metric([self.label], value)
        return family

# Per member of a routing database, labelled ``member`` (primary, replica1, ...): (name, stats key, help).
MEMBER_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("member_pool_connections_max", "max", "Largest number of connections the member's pool may hold."),
    ("member_pool_connections_active", "active", "Connections checked out of the member's pool now."),
    ("member_pool_connections_idle", "idle", "Open connections waiting in the member's pool now."),
)


def member_metrics(db: Any, database: str) -> Iterator[Metric]:
    """Pool gauges, reads served, lag and health per member (without replicas: the primary only)."""
    members = PoolDiagnostics(db).get_member_stats()
    labels = [*LABELS, "member"]
    for name, key, doc in MEMBER_GAUGES:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=labels)
        for member, stats in members.items():
            family.add_metric([database, member], stats[key])
        yield family
    reads = CounterMetricFamily(PREFIX + "member_reads", "Reads outside transactions served by the member.",
                                labels=labels)  # fmt: skip
    doc = "Replay lag measured by the last poll (NaN: unknown)."
    lag = GaugeMetricFamily(PREFIX + "replica_lag_seconds", doc, labels=labels)
    healthy = GaugeMetricFamily(PREFIX + "member_healthy", "1 when the member may serve reads.",
                                labels=labels)  # fmt: skip
    for member, stats in members.items():
        reads.add_metric([database, member], stats.get("reads_total") or 0)
        value = stats.get("lag_seconds")
        lag.add_metric([database, member], _lag_value(value))
        healthy.add_metric([database, member], 0 if stats.get("healthy") is False else 1)
    yield reads
    yield lag
    yield healthy


def _lag_value(value: Any) -> float:
    """A member's lag as a gauge value: +Inf when replication stopped, NaN when unknown."""
    if value == "stopped":
        return math.inf
    return math.nan if value is None else float(value)



def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


# ---------------------------------------------------------------- several processes


class _ProcessMetrics:
    """The ``prometheus_client`` metric objects whose values multiprocess mode keeps in per-process files."""

    def __init__(self) -> None:
        self.counters = {
            key: Counter(PREFIX + name, doc, LABELS, registry=None) for name, key, doc in POOL_COUNTERS
        }
        self.counters["health_checks"] = Counter(PREFIX + "health_checks", CHECKS_DOC, LABELS, registry=None)
        self.gauges = {
            key: Gauge(PREFIX + name, doc, LABELS, registry=None, multiprocess_mode="livesum")
            for name, key, doc in POOL_GAUGES
        }
        self.utilization = Gauge(PREFIX + "pool_utilization_ratio", UTILIZATION_DOC, LABELS, registry=None,
                                 multiprocess_mode="livemax")  # fmt: skip
        self.waits = Histogram(PREFIX + "pool_acquire_wait_seconds", WAIT_DOC, LABELS, registry=None,
                               buckets=WAIT_BUCKETS)  # fmt: skip


_process_metrics: _ProcessMetrics | None = None
_process_metrics_lock = threading.Lock()


def _metrics_objects() -> _ProcessMetrics:
    global _process_metrics
    with _process_metrics_lock:
        if _process_metrics is None:
            _process_metrics = _ProcessMetrics()
        return _process_metrics


class ProcessExporter:
    """Mirrors one process's pool, query and check counters of a database into the multiprocess files."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker
        self.label = database_name(checker.db)
        self._metrics = _metrics_objects()
        self._lock = threading.Lock()
        self._synced: dict[str, float] = {}
        self._synced_buckets: list[int] = [0] * (len(WAIT_BUCKETS) + 1)
        self._synced_sum = 0.0
        self._thread: _SyncThread | None = None
        forks.register(self)

    def _counter_values(self) -> dict[str, float]:
        stats = PoolDiagnostics(self.checker.db).get_pool_stats()
        values = {key: float(stats[key]) for _name, key, _doc in POOL_COUNTERS}
        values["health_checks"] = float(self.checker.checks_total)
        return values

    def _buckets(self) -> tuple[list[int], float]:
        db: Any = self.checker.db
        if not isinstance(db, InstrumentedPool):
            return [0] * (len(WAIT_BUCKETS) + 1), 0.0
        with db.counters.lock:
            return list(db.counters.wait_buckets), db.counters.wait_sum

    def sync(self) -> None:
        """Add what this process counted since the last sync; set its gauges."""
        with self._lock:
            self._sync_counters()
            self._sync_histogram()
            stats = PoolDiagnostics(self.checker.db).get_pool_stats()
            for key, gauge in self._metrics.gauges.items():
                gauge.labels(self.label).set(stats[key])
            self._metrics.utilization.labels(self.label).set(stats["utilization_percent"] / 100)

    def _sync_counters(self) -> None:
        for key, value in self._counter_values().items():
            child = self._metrics.counters[key].labels(self.label)  # exported at 0 before the first count
            delta = value - self._synced.get(key, 0.0)
            if delta > 0:
                child.inc(delta)
            self._synced[key] = max(value, self._synced.get(key, 0.0))

    def _sync_histogram(self) -> None:
        buckets, total = self._buckets()
        child: Any = self._metrics.waits.labels(self.label)
        # prometheus_client has no public "add n observations to bucket i"; its per-bucket values are
        # the multiprocess values a Histogram child keeps (_buckets, _sum), incremented here by the delta.
        for index, count in enumerate(buckets):
            delta = count - self._synced_buckets[index]
            if delta > 0:
                child._buckets[index].inc(delta)
        if total > self._synced_sum:
            child._sum.inc(total - self._synced_sum)
        self._synced_buckets, self._synced_sum = buckets, max(total, self._synced_sum)

    def start(self) -> None:
        """Sync every :data:`SYNC_INTERVAL` seconds in a named daemon thread (restarted in a forked child)."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = _SyncThread(self)
            self._thread.start()

    def stop(self) -> None:
        """Stop the sync thread after one last sync."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.stop()
        self.sync()

    def _after_fork_in_child(self) -> None:
        """A forked child counts from what it inherited: only its own work goes into its file."""
        self._lock = threading.Lock()
        self._synced = self._counter_values()
        self._synced_buckets, self._synced_sum = self._buckets()
        self._thread = None
        self.start()


class _SyncThread(threading.Thread):
    """Calls ``sync()`` on an exporter it references weakly, until stopped or the exporter is gone."""

    def __init__(self, exporter: ProcessExporter) -> None:
        super().__init__(name=f"api.db-metrics-sync[{exporter.label}]", daemon=True)
        self._exporter = weakref.ref(exporter)
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    def run(self) -> None:
        while not self._stop_event.wait(SYNC_INTERVAL):
            exporter = self._exporter()
            if exporter is None:
                return
            try:
                exporter.sync()
            except Exception as exc:  # keep syncing; a failed pass is logged and retried
                logger.error("metrics sync of %s failed: %s", exporter.label, exc)
            del exporter


def mark_process_dead(pid: int) -> None:
    """Drop the live gauges of a worker that ended (gunicorn's ``child_exit`` hook); its counters stay."""
    path = multiprocess_dir()
    if path:
        _mark_process_dead(pid, path)


# ---------------------------------------------------------------- registry and exposition


class MetricsEndpoint:
    """What ``/metrics`` serves for one checker: its registry, and the exporter in multiprocess mode."""

    def __init__(self, checker: HealthChecker, *, details: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.exporter: ProcessExporter | None = None
        path = multiprocess_dir()
        if path:
            if not os.path.isdir(path):
                from api.db.exceptions import ConfigurationError

                raise ConfigurationError(
                    f"{MULTIPROC_ENV}={path} is not a directory: create it (empty, shared by the workers) "
                    "or unset it"
                )
            MultiProcessCollector(self.registry, path=path)
            self.registry.register(DatabaseCollector(checker, pool=False, details=details))
            self.exporter = ProcessExporter(checker)
            self.exporter.start()
        else:
            self.registry.register(DatabaseCollector(checker, details=details))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition for an ``Accept`` header (OpenMetrics when asked for) and its content type."""
        if self.exporter is not None:
            self.exporter.sync()
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    def close(self) -> None:
        """Stop the sync thread (one last sync first)."""
        if self.exporter is not None:
            self.exporter.stop()


def metrics_registry(checker: HealthChecker) -> CollectorRegistry:
    """A new one-process registry holding only the :class:`DatabaseCollector` of ``checker``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(checker))
    return registry


def render_metrics(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The exposition text of ``registry`` for an ``Accept`` header, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type
