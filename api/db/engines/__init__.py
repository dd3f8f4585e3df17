"""One module per engine family behind one interface; ``engine_for(db)`` picks it once per database."""

from __future__ import annotations

import peewee

from api.db.engines.base import Engine, Flavour
from api.db.engines.mysql import MySQLEngine
from api.db.engines.postgres import PostgresEngine
from api.db.engines.sqlite import SqliteEngine
from api.db.engines.state import DatabaseState, database_label, state_of
from api.db.exceptions import ConfigurationError

ENGINES: tuple[type[Engine], ...] = (PostgresEngine, MySQLEngine, SqliteEngine)
ENGINE_NAMES: dict[str, type[Engine]] = {cls.name: cls for cls in ENGINES}
FLAVOURS: dict[str, Flavour] = {f.name: f for cls in ENGINES for f in cls.flavours}
ENGINE_OF_FLAVOUR: dict[str, type[Engine]] = {f.name: cls for cls in ENGINES for f in cls.flavours}


def engine_class(database: peewee.Database) -> type[Engine]:
    """The engine family of ``database`` from its class (no round trip)."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    for cls in ENGINES:
        if isinstance(database, cls.database_class):
            return cls
    raise ConfigurationError(f"unsupported database class {type(database).__name__}")


def engine_for(database: peewee.Database) -> Engine:
    """The engine object of ``database``, chosen on first use and kept in its state."""
    if isinstance(database, peewee.DatabaseProxy):
        database = database.obj
    state = state_of(database)
    if state.engine is None:
        state.engine = engine_class(database)(database)
    return state.engine


def engine_named(name: str) -> type[Engine]:
    """The engine family called ``name`` (``postgres``, ``mysql``, ``sqlite``)."""
    try:
        return ENGINE_NAMES[name]
    except KeyError:
        raise ConfigurationError(f"unknown engine {name!r}; known: {', '.join(ENGINE_NAMES)}") from None


def db_type(database: peewee.Database) -> str:
    """``postgres``, ``mysql`` or ``sqlite`` from the database class (no round trip)."""
    return engine_class(database).name


__all__ = [
    "ENGINES",
    "DatabaseState",
    "Engine",
    "Flavour",
    "database_label",
    "db_type",
    "engine_class",
    "engine_for",
    "engine_named",
    "state_of",
]
