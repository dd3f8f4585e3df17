"""connect(): a Peewee database from a URL or ``DATABASE_URL``, pooled for PostgreSQL and MySQL.

Built on ``playhouse.db_url``; this module adds what it lacks: ``mariadb://``,
a check that the driver is importable before anything else happens, typed
errors whose text never shows the password, and the pool settings of
:mod:`api.db.pool.config` (keywords, environment, presets) turned into an
instrumented ``playhouse.pool`` database (:mod:`api.db.pool.pool`) with connect and
statement timeouts, ``application_name`` / ``program_name`` and query monitoring.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import peewee
from playhouse import db_url

from api.db.engines.state import state_of
from api.db.exceptions import ConfigurationError, DriverNotInstalled, InvalidDatabaseURL
from api.db.pool.config import DatabaseConfig, config_keys, load_config
from api.db.pool.pool import POOL_CLASSES
from api.db.pool.querymon import QueryMonitor
from api.db.redact import redact_url

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "DATABASE_URL"


class _Scheme:
    __slots__ = ("engine", "playhouse_scheme", "driver", "extra")

    def __init__(self, engine: str, playhouse_scheme: str, driver: str | None, extra: str | None) -> None:
        self.engine = engine
        self.playhouse_scheme = playhouse_scheme
        self.driver = driver
        self.extra = extra


# The URL schemes users write, mapped to the playhouse scheme that builds the database.
SCHEMES: dict[str, _Scheme] = {
    "postgresql": _Scheme("postgres", "postgresql+pool", "psycopg2", "postgres"),
    "postgres": _Scheme("postgres", "postgresql+pool", "psycopg2", "postgres"),
    "mysql": _Scheme("mysql", "mysql+pool", "pymysql", "mysql"),
    "mariadb": _Scheme("mysql", "mysql+pool", "pymysql", "mysql"),
    "sqlite": _Scheme("sqlite", "sqlite", None, None),
}

# TCP keepalives, so a PostgreSQL call on a dead network fails within about a minute
# instead of waiting forever (libpq ignores them on Unix sockets).
POSTGRES_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
# Client-side read/write timeouts on MySQL exceed the server's statement limit by this much.
MYSQL_IO_MARGIN = 10.0
MYSQL_DEFAULTS: dict[str, Any] = {"charset": "utf8mb4"}


def resolve_url(url: str | None = None) -> str:
    """The URL to use: ``url`` if given, else ``$DATABASE_URL``; a ConfigurationError if neither."""
    if url is None:
        url = os.environ.get(DATABASE_URL_ENV)
        if not url:
            raise ConfigurationError(
                f"no database URL: pass url= or set {DATABASE_URL_ENV} "
                "(for example postgresql://user:password@host:5432/dbname)"
            )
    if not isinstance(url, str) or not url.strip():
        raise InvalidDatabaseURL("the database URL is empty")
    return url.strip()


def parse_url(url: str) -> tuple[_Scheme, str]:
    """Validate ``url`` and return its scheme entry and the URL playhouse.db_url should see."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise InvalidDatabaseURL(f"malformed database URL {shown}: {exc}") from None
    if not parts.scheme or "://" not in url:
        raise InvalidDatabaseURL(
            f"malformed database URL {shown}: expected scheme://[user[:password]@]host[:port]/database"
        )
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        raise InvalidDatabaseURL(f"unsupported scheme {parts.scheme!r} in {shown}; use one of {supported}")
    database = parts.path.lstrip("/")
    if scheme.engine == "sqlite":
        if not database and parts.netloc:
            raise InvalidDatabaseURL(
                f"{shown} reads the path as a host name; SQLite URLs take three slashes: sqlite:///path/to/file.db"
            )
    else:
        if not database:
            raise InvalidDatabaseURL(f"{shown} names no database: add it as the path, e.g. {parts.scheme}://host/dbname")
        if not parts.hostname and "host=" not in parts.query:
            raise InvalidDatabaseURL(f"{shown} names no host: use {parts.scheme}://host[:port]/{database}")
        if port == 0:
            raise InvalidDatabaseURL(f"{shown}: port 0 is not a valid port")
    # Swap the scheme textually: urlunsplit would drop the empty authority of sqlite:////abs/path.
    target = scheme.playhouse_scheme + url[len(parts.scheme):]
    return scheme, target


def _require_driver(scheme: _Scheme, shown: str) -> None:
    if scheme.driver and importlib.util.find_spec(scheme.driver) is None:
        raise DriverNotInstalled(
            f"{shown} needs the {scheme.driver} driver, which is not installed: "
            f"pip install 'api-db[{scheme.extra}]'"
        )


def connect(
    url: str | None = None,
    *,
    preset: str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> peewee.Database:
    """Return a Peewee database for ``url`` (or ``$DATABASE_URL``); no connection is opened yet.

    ``postgresql://`` / ``postgres://`` and ``mysql://`` / ``mariadb://`` give pooled
    databases (:mod:`api.db.pool.pool`, built on ``playhouse.pool``); ``sqlite:///path`` a
    plain SQLite database. Pool and retry settings (:mod:`api.db.pool.config`) come from
    ``overrides``, else ``environ`` (default ``os.environ``), else ``preset``; other
    query-string parameters and ``overrides`` are passed to the driver.
    """
    url = resolve_url(url)
    scheme, target = parse_url(url)
    shown = redact_url(url)
    _require_driver(scheme, shown)
    try:
        params = db_url.parse(target, unquote_password=True, unquote_user=True)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise InvalidDatabaseURL(f"cannot read {shown}: {redact_url(str(exc))}") from None
    params.update(overrides)
    keys = config_keys()
    settings = {key: params.pop(key) for key in list(params) if key in keys}
    config = load_config(environ, preset=preset, **settings)
    if scheme.engine == "mysql":
        for key, value in MYSQL_DEFAULTS.items():
            params.setdefault(key, value)
    try:
        database: Any
        if scheme.engine == "sqlite":
            driver_options = {key: value for key, value in overrides.items() if key not in keys}
            database = db_url.connect(target, unquote_password=True, unquote_user=True, **driver_options)
        else:
            _apply_timeouts(scheme.engine, params, config)
            name = params.pop("database")
            database = POOL_CLASSES[scheme.engine](
                name, pool_config=config.pool, retry_config=config.retry, target=shown, **params
            )
    except (ValueError, RuntimeError, TypeError) as exc:
        raise InvalidDatabaseURL(f"cannot build a database from {shown}: {redact_url(str(exc))}") from None
    state = state_of(database)
    state.url = shown
    state.config = config
    if config.pool.diagnostics:
        QueryMonitor.install(database, slow_query_ms=config.pool.slow_query_ms)
    logger.debug("database configured from %s", shown)
    return database


def _apply_timeouts(engine: str, params: dict[str, Any], config: DatabaseConfig) -> None:
    """Connect / statement timeouts and the application name as the driver spells them (caller's values win)."""
    pool = config.pool
    if engine == "postgres":
        params.setdefault("connect_timeout", max(2, math.ceil(pool.connect_timeout)))  # libpq: whole seconds, >= 2
        params.setdefault("application_name", pool.app_name)
        for key, value in POSTGRES_KEEPALIVES.items():
            params.setdefault(key, value)
        if pool.statement_timeout > 0:
            option = f"-c statement_timeout={int(pool.statement_timeout * 1000)}"
            params["options"] = f"{params['options']} {option}" if params.get("options") else option
    else:
        params.setdefault("connect_timeout", pool.connect_timeout)
        params.setdefault("program_name", pool.app_name)
        if pool.statement_timeout > 0:
            params.setdefault("read_timeout", pool.statement_timeout + MYSQL_IO_MARGIN)
            params.setdefault("write_timeout", pool.statement_timeout + MYSQL_IO_MARGIN)

