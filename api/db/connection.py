"""connect(): a Peewee database from a URL or ``DATABASE_URL``, pooled for PostgreSQL and MySQL.

Built on ``playhouse.db_url``; this module adds what it lacks: ``mariadb://``,
a check that the driver is importable before anything else happens, and typed
errors whose text never shows the password.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import peewee
from playhouse import db_url

from api.db.exceptions import ConfigurationError, DriverNotInstalled, InvalidDatabaseURL
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

# Defaults applied to every pooled database unless the URL or the caller says otherwise.
POOL_DEFAULTS: dict[str, Any] = {"max_connections": 20, "stale_timeout": 3600, "timeout": 30}
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


def connect(url: str | None = None, **overrides: Any) -> peewee.Database:
    """Return a Peewee database for ``url`` (or ``$DATABASE_URL``); no connection is opened yet.

    ``postgresql://`` / ``postgres://`` and ``mysql://`` / ``mariadb://`` give pooled
    databases (``playhouse.pool``); ``sqlite:///path`` a plain SQLite database.
    Query-string parameters and ``overrides`` are passed to the driver / pool.
    """
    url = resolve_url(url)
    scheme, target = parse_url(url)
    shown = redact_url(url)
    _require_driver(scheme, shown)
    params: dict[str, Any] = {}
    if scheme.engine != "sqlite":
        params.update(POOL_DEFAULTS)
    if scheme.engine == "mysql":
        params.update(MYSQL_DEFAULTS)
    params.update(overrides)
    try:
        database = db_url.connect(target, unquote_password=True, unquote_user=True, **params)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise InvalidDatabaseURL(f"cannot build a database from {shown}: {redact_url(str(exc))}") from None
    database.api_db_url = shown
    logger.debug("database configured from %s", shown)
    return database


def db_type(database: peewee.Database) -> str:
    """``postgres``, ``mysql`` or ``sqlite`` from the database class (no round trip)."""
    if isinstance(database, peewee.PostgresqlDatabase):
        return "postgres"
    if isinstance(database, peewee.MySQLDatabase):
        return "mysql"
    if isinstance(database, peewee.SqliteDatabase):
        return "sqlite"
    raise ConfigurationError(f"unsupported database class {type(database).__name__}")
