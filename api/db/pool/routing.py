"""Read/write routing: one database object over a primary pool and replica pools.

``connect(url, replicas=[...])`` returns the primary's pool with this mixin: every write,
all DDL and everything inside a transaction run on the primary; a ``SELECT`` outside a
transaction runs on a healthy replica, round robin. ``with db.primary():`` forces the
primary; after a thread commits a write its reads stay on the primary for
``read_your_writes`` seconds (2 s by default), so it reads what it wrote.

Each replica has its own instrumented pool (:class:`Member`). A named background thread
(weakly referenced, stopped by ``close_all()``) measures every replica's role and lag each
``replica_poll_interval`` seconds on a probe connection with short timeouts (2 s connect,
1 s statement), so one poll is bounded. A replica that does not answer, is not a standby any
more than it is a Galera node that is not Synced, or lags more than ``max_replica_lag``, is
skipped; with none left, reads go to the primary (``replica_fallback=primary``, the default)
or raise :class:`NoHealthyReplica` (``replica_fallback=fail``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import peewee

from api.db.engines import engine_class
from api.db.engines.base import MemberRole
from api.db.engines.state import state_of
from api.db.error_handler import ErrorCategory, classify_error
from api.db.exceptions import ConfigurationError, NoHealthyReplica
from api.db.pool.config import RoutingConfig
from api.db.pool.failover import FailoverMixin
from api.db.pool.pool import Periodic

logger = logging.getLogger(__name__)

PRIMARY = "primary"
PROBE_CONNECT_TIMEOUT = 2  # seconds (libpq: whole seconds, at least 2)
PROBE_STATEMENT_TIMEOUT = 1.0
PROBE_IO_TIMEOUT = 2.0

# A statement a replica can answer: a plain SELECT (or a WITH without data changes), no row locks.
_READ = re.compile(
    r"^\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*\(*\s*(?:SELECT|WITH)\b", re.IGNORECASE | re.DOTALL
)
_NOT_READ = re.compile(
    r"\bFOR\s+(?:UPDATE|SHARE|NO\s+KEY\s+UPDATE|KEY\s+SHARE)\b|\bLOCK\s+IN\s+SHARE\s+MODE\b|\bINTO\b"
    r"|\b(?:INSERT|UPDATE|DELETE|MERGE)\b|\bnextval\s*\(|\bsetval\s*\(|advisory|\bGET_LOCK\s*\("
    r"|\bset_config\s*\(",
    re.IGNORECASE,
)


def is_read(sql: str) -> bool:
    """True for a statement a replica may answer: a SELECT that neither locks rows nor changes data."""
    return _READ.match(sql) is not None and _NOT_READ.search(sql) is None


class Member:
    """One replica: its pool, its last measured role and lag, and the reads it served."""

    def __init__(self, name: str, database: FailoverMixin, routing: RoutingConfig) -> None:
        self.name = name
        self.database = database
        self.routing = routing
        self.role: MemberRole | None = None  # None until the first poll
        self.error: str | None = None  # the last poll's classified failure
        self.polled_at = 0.0  # time.time() of the last poll
        self.reads = 0
        self._probe: Any = None

    @property
    def healthy(self) -> bool:
        """Answered the last poll, may take traffic, and is within ``max_replica_lag``."""
        role = self.role
        if role is None or self.error is not None or role.not_ready is not None:
            return False
        return role.lag_seconds is None or role.lag_seconds <= self.routing.max_replica_lag

    def poll(self) -> None:
        """Read the member's role and lag on the probe connection (bounded by its timeouts)."""
        try:
            probe = self._probe_database()
            probe.connect(reuse_if_open=True)
            with contextlib.closing(probe.connection().cursor()) as cursor:
                self.role = engine_class(self.database)(self.database).read_role(cursor)
            self.error = None
        except Exception as exc:  # a replica that does not answer is skipped until it does
            info = classify_error(exc, engine_class(self.database).name)
            if self.error is None:
                logger.warning("replica %s (%s) skipped: %s: %s", self.name, self.database.target,
                               info.category.value, info.message)  # fmt: skip
            self.error = f"{info.category.value}: {info.message}"
            self._close_probe()
        self.polled_at = time.time()

    def _probe_database(self) -> Any:
        if self._probe is None:
            params = dict(self.database.connect_params)
            self._probe = engine_class(self.database)(self.database).probe_database(
                params, connect_timeout=PROBE_CONNECT_TIMEOUT, statement_timeout=PROBE_STATEMENT_TIMEOUT,
                io_timeout=PROBE_IO_TIMEOUT,
            )  # fmt: skip
        return self._probe

    def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is None:
            return
        try:
            probe.close()
        except Exception as exc:  # the probe is discarded; a failing close changes nothing
            logger.debug(
                "replica %s: closing the probe failed: %s", self.name, classify_error(exc).message
            )

    def close(self) -> None:
        """Close the probe connection and every pooled connection of this replica."""
        self._close_probe()
        self.database.close_all()

    def describe(self) -> dict[str, Any]:
        """Role, lag, health and reads, for health, preflight and metrics."""
        role = self.role.as_dict() if self.role is not None else {"role": "unknown"}
        return {"member": self.name, "url": self.database.target, **role, "healthy": self.healthy,
                "reads_total": self.reads, "error": self.error}  # fmt: skip


class RoutingMixin(FailoverMixin):
    """The primary's pool, routing reads outside transactions to :class:`Member` replicas."""

    replica_members: list[Member]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.replica_members = []
        self.primary_reads = 0
        self._reads_lock = threading.Lock()  # the read counters, primary and replicas
        self._route_local = threading.local()
        self._round_robin = itertools.count()
        self._poller: _Poller | None = None
        self._poller_lock = threading.Lock()

    @property
    def routing(self) -> RoutingConfig:
        config = state_of(self).config
        return config.routing if config is not None else RoutingConfig()

    # ---------------------------------------------------------------- public

    @contextlib.contextmanager
    def primary(self) -> Iterator[None]:
        """Send every statement of this thread to the primary inside the block."""
        local = self._route_local
        local.forced = getattr(local, "forced", 0) + 1
        try:
            yield
        finally:
            local.forced -= 1

    def members(self) -> list[dict[str, Any]]:
        """The primary and each replica: role, lag, health, reads served."""
        primary = {"member": PRIMARY, "url": self.target, "role": PRIMARY, "healthy": True,
                   "reads_total": self.primary_reads}  # fmt: skip
        return [primary] + [member.describe() for member in self.replica_members]

    def member_pools(self) -> dict[str, Any]:
        """Member name -> its pooled database, the primary first."""
        return {PRIMARY: self, **{m.name: m.database for m in self.replica_members}}

    def poll_replicas(self) -> None:
        """Measure every replica now (the background thread does this each poll interval)."""
        for member in self.replica_members:
            member.poll()

    # ---------------------------------------------------------------- routing

    def execute_sql(self, sql: str, params: Any = None, *args: Any, **kwargs: Any) -> Any:
        member = self._replica_for(sql)
        if member is not None:
            return self._read_on(member, sql, params)
        cursor = super().execute_sql(sql, params, *args, **kwargs)
        if self.in_transaction():
            return cursor
        if is_read(sql):
            self._count_read(None)
        else:
            self._route_local.wrote_at = time.monotonic()
        return cursor

    def commit(self) -> None:
        super().commit()
        self._route_local.wrote_at = time.monotonic()

    def _replica_for(self, sql: str) -> Member | None:
        """The replica that answers ``sql``, or None for the primary."""
        if not self.replica_members or self.in_transaction() or not is_read(sql):
            return None
        local = self._route_local
        if getattr(local, "forced", 0):
            return None
        if time.monotonic() - getattr(local, "wrote_at", -1e9) < self.routing.read_your_writes:
            return None
        self._ensure_poller()
        healthy = [member for member in self.replica_members if member.healthy]
        if healthy:
            return healthy[next(self._round_robin) % len(healthy)]
        if self.routing.replica_fallback == "fail":
            raise NoHealthyReplica(self._no_replica_message())
        return None

    def _no_replica_message(self) -> str:
        states = "; ".join(f"{m.name}: {m.error or (m.role.as_dict() if m.role else 'not polled yet')}"
                           for m in self.replica_members)  # fmt: skip
        return (
            f"no healthy replica for a read ({states}); wait for the replicas to catch up, raise "
            "DB_MAX_REPLICA_LAG, or set DB_REPLICA_FALLBACK=primary to read on the primary"
        )

    def _read_on(self, member: Member, sql: str, params: Any) -> Any:
        """Run the read on ``member`` in a connection of its own pool, returned at once."""
        database = member.database
        opened = database.is_closed()
        try:
            if opened:
                database.connect()
            cursor = database.execute_sql(sql, params)
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            info = classify_error(exc, self._engine_name())
            if info.category is not ErrorCategory.CONNECTION_LOST:
                raise
            # A read outside a transaction changes nothing: the primary answers it instead.
            logger.warning(
                "replica %s lost (%s); the read goes to the primary", member.name, info.message
            )
            member.error = f"{info.category.value}: {info.message}"
            self._count_read(None)
            return super().execute_sql(sql, params)
        finally:
            if opened and not database.is_closed():
                database.close()
        self._count_read(member)
        return cursor

    def _count_read(self, member: Member | None) -> None:
        """One more read served by ``member`` (None: the primary)."""
        with self._reads_lock:
            if member is None:
                self.primary_reads += 1
            else:
                member.reads += 1

    # ---------------------------------------------------------------- lifecycle

    def _ensure_poller(self) -> None:
        if self._poller is None:
            with self._poller_lock:
                if self._poller is None:
                    self._poller = _Poller(self)
                    self._poller.start()

    def close_all(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.stop()
        for member in self.replica_members:
            member.close()
        super().close_all()


class _Poller(Periodic):
    """Polls the replicas of a routing database until stopped or it is gone."""

    def __init__(self, database: RoutingMixin) -> None:
        interval = database.routing.replica_poll_interval
        super().__init__(f"api.db-replica-poll[{database.target}]", database, interval)

    def step(self, target: Any) -> None:
        target.poll_replicas()

    def failed(self, target: Any, exc: Exception) -> None:
        logger.error("replica poll of %s failed: %s", target.target, classify_error(exc).message)


_ROUTED: dict[type, type] = {}
_ROUTED_LOCK = threading.Lock()


def routed_class(base: type[FailoverMixin]) -> type[RoutingMixin]:
    """The routing class over the failover-aware pool class ``base`` (made once per base)."""
    with _ROUTED_LOCK:
        cls = _ROUTED.get(base)
        if cls is None:
            cls = _ROUTED[base] = type(f"Routing{base.__name__}", (RoutingMixin, base), {
                "__doc__": f"{base.__name__} routing reads to replicas (api.db.pool.routing)."})  # fmt: skip
        return cls


def attach_replicas(database: Any, replicas: list[Any]) -> None:
    """Give the routing ``database`` its replica pools, named replica1, replica2, ..."""
    if not isinstance(database, RoutingMixin):
        raise TypeError("attach_replicas needs a database built by connect(url, replicas=[...])")
    for index, replica in enumerate(replicas, 1):
        if not isinstance(replica, FailoverMixin) or engine_class(replica) is not engine_class(
            database
        ):
            raise ConfigurationError(
                f"replica {index} is not a pooled database of the primary's engine: give every replica URL "
                "the primary's scheme"
            )
        # TODO(redact): register the replica's password with redact.py's registry once it has one.
        database.replica_members.append(Member(f"replica{index}", replica, database.routing))


def pinned_to_primary(database: Any) -> contextlib.AbstractContextManager[None]:
    """``database.primary()`` on a routing database, else a block that changes nothing."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    if isinstance(database, RoutingMixin):
        return database.primary()
    return contextlib.nullcontext()
