"""DatabaseState: what api.db keeps about one Peewee database, in one typed object.

Peewee's ``Database`` declares no place for it, so the state hangs on the database as
one attribute (``STATE_ATTRIBUTE``) created on first use; everything else asks
:func:`state_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import peewee

if TYPE_CHECKING:
    from api.db.engines.base import Engine
    from api.db.pool.config import DatabaseConfig
    from api.db.pool.querymon import QueryMonitor

STATE_ATTRIBUTE = "_api_db_state"


@dataclass(eq=False)
class DatabaseState:
    """The engine, settings and helpers api.db attached to one database."""

    engine: Engine | None = None  # chosen once by engine_for()
    url: str = ""  # the URL it was built from, password masked
    config: DatabaseConfig | None = None  # pool and retry settings (databases from connect())
    query_monitor: QueryMonitor | None = None  # slow-query log on peewee's query_hooks
    health_checkers: dict[Any, Any] = field(default_factory=dict)  # probe settings -> HealthChecker
    on_close: list[Callable[[], None]] = field(default_factory=list)  # run by the pool's close_all()
    pool_listeners: tuple[Callable[[Any], None], ...] = ()  # add_pool_listener() callbacks (pool/events.py)
    span_facts: dict[str, Any] | None = None  # OpenTelemetry database attributes, computed once (tracing.py)

    @property
    def label(self) -> str:
        """How logs and thread names name the database: the masked URL, else the database name."""
        return self.url


def state_of(database: peewee.Database) -> DatabaseState:
    """The state of ``database``, created empty on first use."""
    state: DatabaseState | None = database.__dict__.get(STATE_ATTRIBUTE)
    if state is None:
        state = database.__dict__.setdefault(STATE_ATTRIBUTE, DatabaseState())
    return state


def database_label(database: peewee.Database) -> str:
    """The masked URL of ``database``, else its name: how logs and metrics name it."""
    return state_of(database).url or str(getattr(database, "database", "?"))
