"""Query monitoring on peewee's ``Database.query_hooks``: timings per normalized statement, slow-query log.

Each statement is reduced to its shape (string and numeric literals become
``?``, ``IN (?, ?, ?)`` becomes ``IN (...)``, whitespace collapses), so logs
never carry data and repeated statements share one entry. Per shape the monitor
keeps a total count, an error count and the last ``WINDOW`` durations, from
which mean, p95 and max are computed on demand.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

from api.db.engines.state import database_label, state_of

logger = logging.getLogger(__name__)

WINDOW = 1000  # durations kept per normalized statement
MAX_SHAPES = 500  # normalized statements tracked; the first seen is dropped beyond this
_NORMALIZED_CACHE_SIZE = 2048

_STRING = re.compile(r"[EeNnXxBb]?'(?:[^'\\]|\\.|'')*'")  # "double quotes" are identifiers: kept
_NUMBER = re.compile(r"(?<![\w.$])[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|\.\d+)\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"%s|%\(\w+\)s|\$\d+|:\w+\b|\?")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_VALUES_LIST = re.compile(r"(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))+")
_SPACE = re.compile(r"\s+")


def normalize_sql(sql: str) -> str:
    """The statement's shape: literals and driver placeholders as ``?``, lists folded, spaces collapsed."""
    text = _STRING.sub("?", sql)
    text = _PLACEHOLDER.sub("?", text)
    text = _NUMBER.sub("?", text)
    text = _VALUES_LIST.sub(r"\1, ...", text)
    text = _IN_LIST.sub("(...)", text)
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True)
class QueryStats:
    """Timings of one normalized statement over its recent window (milliseconds)."""

    sql: str
    count: int  # every execution seen
    errors: int
    window: int  # executions the timings below cover
    mean_ms: float
    p95_ms: float
    max_ms: float


class _Shape:
    __slots__ = ("count", "errors", "durations")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.durations: deque[float] = deque(maxlen=WINDOW)


class QueryMonitor:
    """A ``query_hooks`` callable that times every statement; install with :meth:`install`."""

    def __init__(self, *, slow_query_ms: float = 1000.0, name: str = "") -> None:
        self.slow_query_ms = slow_query_ms
        self.name = name
        self._lock = threading.Lock()
        self._shapes: OrderedDict[str, _Shape] = OrderedDict()
        self._normalized: dict[str, str] = {}
        self.queries_total = 0
        self.slow_queries_total = 0
        self.errors_total = 0

    @classmethod
    def install(cls, database: Any, *, slow_query_ms: float = 1000.0) -> QueryMonitor:
        """The monitor of ``database``, created and added to its ``query_hooks`` on first use."""
        existing = state_of(database).query_monitor
        if isinstance(existing, QueryMonitor):
            existing.slow_query_ms = slow_query_ms
            return existing
        monitor = cls(slow_query_ms=slow_query_ms, name=database_label(database))
        state_of(database).query_monitor = monitor
        database.query_hooks.append(monitor)
        return monitor

    @staticmethod
    def uninstall(database: Any) -> None:
        monitor = state_of(database).query_monitor
        if monitor is not None:
            if monitor in database.query_hooks:
                database.query_hooks.remove(monitor)
            state_of(database).query_monitor = None

    def normalize(self, sql: str) -> str:
        shape = self._normalized.get(sql)  # peewee repeats the same SQL text with new parameters
        if shape is None:
            shape = normalize_sql(sql)
            if len(self._normalized) >= _NORMALIZED_CACHE_SIZE:
                self._normalized.clear()
            self._normalized[sql] = shape
        return shape

    def __call__(self, event: Any) -> None:
        """peewee calls this with a ``QueryEvent(sql, params, duration, exception)`` after each statement."""
        shape_sql = self.normalize(event.sql)
        duration = event.duration
        failed = event.exception is not None
        with self._lock:
            shape = self._shapes.get(shape_sql)
            if shape is None:
                shape = self._shapes[shape_sql] = _Shape()
                if len(self._shapes) > MAX_SHAPES:
                    self._shapes.popitem(last=False)  # the first seen goes first
            shape.count += 1
            shape.durations.append(duration)
            self.queries_total += 1
            if failed:
                shape.errors += 1
                self.errors_total += 1
        elapsed_ms = duration * 1e3
        if elapsed_ms >= self.slow_query_ms:
            with self._lock:
                self.slow_queries_total += 1
            logger.warning(
                "slow query on %s: %.1f ms (threshold %g ms)%s: %s",
                self.name, elapsed_ms, self.slow_query_ms, " [failed]" if failed else "", shape_sql,
            )  # fmt: skip

    def stats(self) -> list[QueryStats]:
        """Every tracked statement's timings."""
        with self._lock:
            snapshot = [(sql, s.count, s.errors, list(s.durations)) for sql, s in self._shapes.items()]
        result = []
        for sql, count, errors, durations in snapshot:
            if not durations:
                continue
            ordered = sorted(durations)
            rank = max(1, math.ceil(0.95 * len(ordered)))
            result.append(
                QueryStats(
                    sql, count, errors, len(ordered),
                    sum(ordered) / len(ordered) * 1e3, ordered[rank - 1] * 1e3, ordered[-1] * 1e3,
                )  # fmt: skip
            )
        return result

    def slowest(self, limit: int = 10) -> list[QueryStats]:
        """The ``limit`` statements with the highest p95, slowest first."""
        return sorted(self.stats(), key=lambda s: (s.p95_ms, s.max_ms), reverse=True)[:limit]

    def reset(self) -> None:
        with self._lock:
            self._shapes.clear()
            self.queries_total = self.slow_queries_total = self.errors_total = 0
