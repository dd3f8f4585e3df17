"""PoolDiagnostics: the statistics of a pool, its health in the log, a monitor thread, query timings.

``PoolDiagnostics(db)`` is a cheap view: the counters live on the database
(:mod:`api.db.pool.pool`, :mod:`api.db.pool.querymon`), so any number of views, made at
any time, read the same numbers. The keys of :meth:`PoolDiagnostics.get_pool_stats`
are constant (:data:`POOL_STAT_KEYS`) and documented in docs/CONNECTION_POOL.md.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import asdict
from typing import Any

import peewee

from api.db.engines.state import database_label, state_of
from api.db.error_handler import classify_error
from api.db.pool.config import PoolConfig
from api.db.pool.pool import InstrumentedPool
from api.db.pool.querymon import QueryMonitor, QueryStats
from api.db.redact import MASK, redact_text

logger = logging.getLogger(__name__)

# Every key get_pool_stats() returns, in order; never renamed (metrics and health checks read them).
POOL_STAT_KEYS: tuple[str, ...] = (
    "max",
    "min",
    "active",
    "idle",
    "waiting",
    "utilization_percent",
    "acquisitions_total",
    "acquisition_timeouts_total",
    "connections_created_total",
    "connections_closed_total",
    "connections_lost_total",
    "connections_reclaimed_total",
    "leaks_detected_total",
    "acquire_wait_ms_p50",
    "acquire_wait_ms_p95",
    "acquire_wait_ms_max",
    "queries_total",
    "slow_queries_total",
    "query_errors_total",
)

HEALTH_CHECK_INTERVAL = 60.0


class PoolDiagnostics:
    """Statistics, health logging, leak checks and query timings of one database."""

    def __init__(self, db: peewee.Database) -> None:
        self.db: Any = db

    @property
    def config(self) -> PoolConfig:
        config = state_of(self.db).config
        return config.pool if config is not None else PoolConfig()

    def get_pool_stats(self) -> dict[str, Any]:
        """The gauges and counters named in :data:`POOL_STAT_KEYS` (zeros where the database has no pool)."""
        stats: dict[str, Any] = dict.fromkeys(POOL_STAT_KEYS, 0)
        stats["utilization_percent"] = 0.0
        db = self.db
        if isinstance(db, InstrumentedPool):
            stats.update({k: v for k, v in db.pool_snapshot().items() if k in stats})
            counters = db.counters
            with counters.lock:
                stats["acquisitions_total"] = counters.acquisitions
                stats["acquisition_timeouts_total"] = counters.timeouts
                stats["connections_created_total"] = counters.created
                stats["connections_closed_total"] = counters.closed
                stats["connections_lost_total"] = counters.lost
                stats["connections_reclaimed_total"] = counters.reclaimed
                stats["leaks_detected_total"] = counters.leaks
            p50, p95, worst = counters.wait_percentiles_ms()
            stats["acquire_wait_ms_p50"] = round(p50, 3)
            stats["acquire_wait_ms_p95"] = round(p95, 3)
            stats["acquire_wait_ms_max"] = round(worst, 3)
        elif hasattr(db, "_in_use") and hasattr(db, "_max_connections"):  # a plain playhouse pool
            stats["max"] = db._max_connections or 0
            stats["active"] = len(db._in_use)
            stats["idle"] = len(db._connections)
        if stats["max"]:
            stats["utilization_percent"] = round(100.0 * stats["active"] / stats["max"], 1)
        monitor = state_of(db).query_monitor
        if isinstance(monitor, QueryMonitor):
            stats["queries_total"] = monitor.queries_total
            stats["slow_queries_total"] = monitor.slow_queries_total
            stats["query_errors_total"] = monitor.errors_total
        return stats

    def get_member_stats(self) -> dict[str, dict[str, Any]]:
        """Per member of a routing database (``primary``, ``replica1``...): its pool stats, role, lag, reads.

        A database without replicas answers ``{"primary": get_pool_stats()}``.
        """
        pools = getattr(self.db, "member_pools", None)
        if not callable(pools):
            return {"primary": {**self.get_pool_stats(), "role": "primary"}}
        described = {item["member"]: item for item in self.db.members()}
        result: dict[str, dict[str, Any]] = {}
        for name, pool in pools().items():
            info = described.get(name, {})
            result[name] = {**PoolDiagnostics(pool).get_pool_stats(), "role": info.get("role"),
                            "lag_seconds": info.get("lag_seconds"), "healthy": info.get("healthy"),
                            "reads_total": info.get("reads_total", 0)}  # fmt: skip
        return result

    def log_pool_health(self) -> int:
        """Log stats at INFO, WARNING (``warning_percent``), CRITICAL (``critical_percent``); return it."""
        stats = self.get_pool_stats()
        config = self.config
        utilization = stats["utilization_percent"]
        if utilization >= config.critical_percent:
            level = logging.CRITICAL
            verdict = (
                f"at or above {config.critical_percent:g}% (critical): requests will soon wait or time out"
            )
        elif utilization >= config.warning_percent:
            level = logging.WARNING
            verdict = f"at or above {config.warning_percent:g}% (warning)"
        else:
            level = logging.INFO
            verdict = "healthy"
        logger.log(
            level,
            "pool %s: %s%% in use (%s of %s, %s idle, %s waiting) %s; acquire wait p95 %.2f ms, "
            "timeouts %s, lost %s, leaks %s",
            _name(self.db), utilization, stats["active"], stats["max"], stats["idle"], stats["waiting"],
            verdict,
            stats["acquire_wait_ms_p95"], stats["acquisition_timeouts_total"],
            stats["connections_lost_total"],
            stats["leaks_detected_total"],
            extra={
                "event": "pool_health", "pool": _name(self.db), "utilization": round(utilization / 100, 4),
                "wait_ms": stats["acquire_wait_ms_p95"], "status": verdict.split(" ")[0],
            },
        )  # fmt: skip
        return level

    def check_leaks(self) -> int:
        """Report checkouts held past ``POOL_LEAK_THRESHOLD`` now (the pool also does it every pass)."""
        if isinstance(self.db, InstrumentedPool):
            return self.db.check_leaks()
        return 0

    def enable_query_monitoring(self, slow_query_ms: float | None = None) -> QueryMonitor:
        """Time every query of the database (already on for databases from ``connect()``)."""
        threshold = self.config.slow_query_ms if slow_query_ms is None else slow_query_ms
        return QueryMonitor.install(self.db, slow_query_ms=threshold)

    def get_query_performance(self, limit: int = 10) -> list[dict[str, Any]]:
        """The ``limit`` slowest statements (by p95): sql, count, errors, window, mean/p95/max ms."""
        monitor = state_of(self.db).query_monitor
        if not isinstance(monitor, QueryMonitor):
            return []
        return [_rounded(stat) for stat in monitor.slowest(limit)]

    def start_health_monitoring(self, interval: float = HEALTH_CHECK_INTERVAL) -> HealthMonitor:
        """Start a daemon thread logging the pool's health every ``interval`` seconds."""
        return start_health_monitoring(self.db, interval=interval)


def _rounded(stat: QueryStats) -> dict[str, Any]:
    data = asdict(stat)
    for key in ("mean_ms", "p95_ms", "max_ms"):
        data[key] = round(data[key], 3)
    return data


def _name(db: Any) -> str:
    return database_label(db)


class HealthMonitor(threading.Thread):
    """Logs pool health periodically; holds it weakly; ``close()``, ``db.close_all()`` stop it."""

    def __init__(self, db: peewee.Database, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval!r}")
        super().__init__(name=f"api.db-pool-health[{_name(db)}]", daemon=True)
        self._db = weakref.ref(db)
        self.interval = interval
        self._stop_event = threading.Event()
        self._last_level = logging.INFO

    def close(self) -> None:
        """Stop the thread (and wait for it, unless called from it)."""
        self._stop_event.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)

    @property
    def stopped(self) -> bool:
        return self._stop_event.is_set()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            db = self._db()
            if db is None:
                return
            try:
                level = PoolDiagnostics(db).log_pool_health()
                if level < self._last_level:
                    logger.info("pool %s: utilization back below the warning threshold", _name(db))
                self._last_level = level
            except Exception as exc:  # outlive a failed pass; the failure is classified and logged
                info = classify_error(exc)
                logger.error(
                    "pool %s: health check failed (%s): %s", _name(db), info.category.value, info.message
                )
            del db


def start_health_monitoring(db: peewee.Database, interval: float = HEALTH_CHECK_INTERVAL) -> HealthMonitor:
    """Start a daemon thread logging ``db``'s pool health every ``interval`` seconds; ``close()`` stops it."""
    monitor = HealthMonitor(db, interval)
    state_of(db).on_close.append(monitor.close)
    monitor.start()
    return monitor


def get_pool_stats(db: peewee.Database) -> dict[str, Any]:
    """Shortcut for ``PoolDiagnostics(db).get_pool_stats()``."""
    return PoolDiagnostics(db).get_pool_stats()


def log_pool_health(db: peewee.Database) -> int:
    """Shortcut for ``PoolDiagnostics(db).log_pool_health()``."""
    return PoolDiagnostics(db).log_pool_health()


def log_connection_config(db: peewee.Database) -> dict[str, Any]:
    """Log (INFO) and return the effective settings of ``db``; the URL and options have passwords masked."""
    config = state_of(db).config
    options = {
        key: (MASK if "pass" in key.lower() else redact_text(value) if isinstance(value, str) else value)
        for key, value in getattr(db, "connect_params", {}).items()
    }
    effective: dict[str, Any] = {
        "url": _name(db),
        "class": type(db).__name__,
        "driver_options": options,
    }
    if config is not None:
        effective["preset"] = config.preset
        effective["pool"] = asdict(config.pool)
        effective["retry"] = asdict(config.retry)
    logger.info("database configuration: %s", effective)
    return effective
