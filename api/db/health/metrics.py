"""Prometheus metrics of one database, computed at scrape time by a custom ``prometheus_client`` collector.

Nothing is counted twice: the pool and query numbers are read from the counters the
pool keeps anyway (:meth:`api.db.pool.diagnostics.PoolDiagnostics.get_pool_stats`, the
acquire-wait histogram of :class:`api.db.pool.pool.PoolCounters`), and the database,
migration and pgvector numbers from the health checker's cached result, so a scrape
costs no database round trip unless that result is older than the cache TTL.
The collector goes into a :class:`prometheus_client.CollectorRegistry` of its own
(never the global one), so two applications in one process do not collide.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from api.db.health.checks import STATUSES, HealthChecker
from api.db.pool.diagnostics import PoolDiagnostics
from api.db.pool.pool import InstrumentedPool

PREFIX = "api_db_"

# (metric name without prefix, get_pool_stats key, help) for gauges and counters read straight from the stats.
POOL_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("pool_connections_max", "max", "Largest number of connections the pool may hold (POOL_MAX_CONNECTIONS)."),
    ("pool_connections_min", "min", "Connections the pool keeps open (POOL_MIN_CONNECTIONS)."),
    ("pool_connections_active", "active", "Connections checked out of the pool now."),
    ("pool_connections_idle", "idle", "Open connections waiting in the pool now."),
    ("pool_waiting_threads", "waiting", "Threads waiting for a free connection now."),
)
POOL_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("pool_acquisitions", "acquisitions_total", "Connections handed out by the pool."),
    ("pool_acquisition_timeouts", "acquisition_timeouts_total", "Checkouts that gave up after POOL_ACQUIRE_TIMEOUT."),
    ("pool_connections_created", "connections_created_total", "Connections opened by the pool."),
    ("pool_connections_closed", "connections_closed_total", "Connections closed by the pool."),
    ("pool_connections_lost", "connections_lost_total", "Connections found broken and discarded."),
    ("pool_connections_reclaimed", "connections_reclaimed_total", "Connections taken back from threads that ended."),
    ("pool_leaks_detected", "leaks_detected_total", "Checkouts held longer than POOL_LEAK_THRESHOLD."),
    ("queries", "queries_total", "Statements executed (query monitoring on)."),
    ("slow_queries", "slow_queries_total", "Statements slower than DB_SLOW_QUERY_MS."),
    ("query_errors", "query_errors_total", "Statements that raised."),
)


class DatabaseCollector:
    """A ``prometheus_client`` collector for one :class:`~api.db.health.checks.HealthChecker` and its database."""

    def __init__(self, checker: HealthChecker) -> None:
        self.checker = checker

    def collect(self) -> Iterator[Metric]:
        db: Any = self.checker.db
        stats = PoolDiagnostics(db).get_pool_stats()
        for name, key, doc in POOL_GAUGES:
            yield _gauge(name, doc, stats[key])
        yield _gauge("pool_utilization_ratio", "Active connections over the maximum (0-1).", stats["utilization_percent"] / 100)
        for name, key, doc in POOL_COUNTERS:
            counter = CounterMetricFamily(PREFIX + name, doc)
            counter.add_metric([], stats[key])
            yield counter
        yield self._wait_histogram(db)
        yield from self._health_metrics()
        yield from member_metrics(db)

    def _wait_histogram(self, db: Any) -> Metric:
        if isinstance(db, InstrumentedPool):
            buckets, total_wait, _count = db.counters.wait_histogram()
        else:
            buckets, total_wait = [(math.inf, 0)], 0.0
        return HistogramMetricFamily(
            PREFIX + "pool_acquire_wait_seconds",
            "Time a checkout waited for a connection.",
            buckets=[(_le(bound), count) for bound, count in buckets],
            sum_value=total_wait,
        )

    def _health_metrics(self) -> Iterator[Metric]:
        health = self.checker.check()  # cached for the checker's TTL
        yield _gauge("up", "1 when the database answered the last health check.", 1 if health.reachable else 0)
        status = GaugeMetricFamily(PREFIX + "health_status", "1 for the status of the last health check.", labels=["status"])
        for name in STATUSES:
            status.add_metric([name], 1 if health.status == name else 0)
        yield status
        yield _gauge("ready", "1 when the last health check found the database ready for traffic.", 1 if health.ready else 0)
        latency = None if health.latency_ms is None else health.latency_ms / 1e3
        yield _gauge("health_check_latency_seconds", "SELECT 1 round trip of the last health check (NaN if none).",
                     math.nan if latency is None else latency)  # fmt: skip
        yield _gauge("health_check_duration_seconds", "Duration of the last health check.", health.check_duration_ms / 1e3)
        yield _gauge("health_check_timestamp_seconds", "Unix time the last health check finished.", health.checked_at)
        checks = CounterMetricFamily(PREFIX + "health_checks", "Health checks that queried the database (not cache hits).")
        checks.add_metric([], self.checker.checks_total)
        yield checks
        yield _gauge("migrations_applied", "Migrations recorded success or skipped.", health.migrations_applied)
        pending = [n for n in health.migrations_pending if n not in health.migrations_running and n not in health.migrations_failed]
        yield _gauge("migrations_pending", "Declared migrations not applied and not running or failed.", len(pending))
        yield _gauge("migrations_running", "Migrations recorded running.", len(health.migrations_running))
        yield _gauge("migrations_failed", "Migrations recorded failed.", len(health.migrations_failed))
        last = health.last_migration_duration_ms
        yield _gauge("last_migration_duration_seconds", "Duration of the most recently recorded migration (NaN if none).",
                     math.nan if last is None else last / 1e3)  # fmt: skip
        yield _gauge("pgvector_available", "1 when the pgvector extension is installed.", 1 if health.pgvector_available else 0)


# Per member of a routing database, labelled ``member`` (primary, replica1, ...): (name, stats key, help).
MEMBER_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("member_pool_connections_max", "max", "Largest number of connections the member's pool may hold."),
    ("member_pool_connections_active", "active", "Connections checked out of the member's pool now."),
    ("member_pool_connections_idle", "idle", "Open connections waiting in the member's pool now."),
)


def member_metrics(db: Any) -> Iterator[Metric]:
    """Pool gauges, reads served, lag and health per member (without replicas: the primary only)."""
    members = PoolDiagnostics(db).get_member_stats()
    for name, key, doc in MEMBER_GAUGES:
        family = GaugeMetricFamily(PREFIX + name, doc, labels=["member"])
        for member, stats in members.items():
            family.add_metric([member], stats[key])
        yield family
    reads = CounterMetricFamily(PREFIX + "member_reads", "Reads outside transactions served by the member.",
                                labels=["member"])  # fmt: skip
    doc = "Replay lag measured by the last poll (NaN: unknown)."
    lag = GaugeMetricFamily(PREFIX + "replica_lag_seconds", doc, labels=["member"])
    healthy = GaugeMetricFamily(PREFIX + "member_healthy", "1 when the member may serve reads.",
                                labels=["member"])  # fmt: skip
    for member, stats in members.items():
        reads.add_metric([member], stats.get("reads_total") or 0)
        value = stats.get("lag_seconds")
        lag.add_metric([member], _lag_value(value))
        healthy.add_metric([member], 0 if stats.get("healthy") is False else 1)
    yield reads
    yield lag
    yield healthy


def _lag_value(value: Any) -> float:
    """A member's lag as a gauge value: +Inf when replication stopped, NaN when unknown."""
    if value == "stopped":
        return math.inf
    return math.nan if value is None else float(value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, doc, value=value)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def metrics_registry(checker: HealthChecker) -> CollectorRegistry:
    """A new registry holding only the :class:`DatabaseCollector` of ``checker``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(checker))
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The exposition text of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
