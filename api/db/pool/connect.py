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
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import peewee
from playhouse import db_url

from api.db.engines import ENGINES, Engine
from api.db.engines.state import state_of
from api.db.exceptions import ConfigurationError, DriverNotInstalled, InvalidDatabaseURL
from api.db.pool.config import config_keys, load_config
from api.db.pool.pool import POOL_CLASSES
from api.db.pool.querymon import QueryMonitor
from api.db.redact import redact_url

logger = logging.getLogger(__name__)

DATABASE_URL_ENV = "DATABASE_URL"


# The URL schemes users write, mapped to the engine that serves them (``playhouse_scheme`` builds it).
SCHEMES: dict[str, type[Engine]] = {scheme: engine for engine in ENGINES for scheme in engine.url_schemes}


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


def parse_url(url: str) -> tuple[type[Engine], str]:
    """Validate ``url`` and return its engine and the URL playhouse.db_url should see."""
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
    if scheme.networked:
        _check_server_url(parts, port, shown)
    elif not parts.path.lstrip("/") and parts.netloc:
        raise InvalidDatabaseURL(
            f"{shown} reads the path as a host name; "
            "SQLite URLs take three slashes: sqlite:///path/to/file.db"
        )
    # Swap the scheme textually: urlunsplit would drop the empty authority of sqlite:////abs/path.
    target = scheme.playhouse_scheme + url[len(parts.scheme):]
    return scheme, target


def _check_server_url(parts: SplitResult, port: int | None, shown: str) -> None:
    """A server URL names a database, a host and a valid port."""
    database = parts.path.lstrip("/")
    if not database:
        raise InvalidDatabaseURL(
            f"{shown} names no database: add it as the path, e.g. {parts.scheme}://host/dbname"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise InvalidDatabaseURL(f"{shown} names no host: use {parts.scheme}://host[:port]/{database}")
    if port == 0:
        raise InvalidDatabaseURL(f"{shown}: port 0 is not a valid port")


def _check_file_path(path: str, shown: str) -> None:
    """A database file's directory must exist (SQLite would fail later with "unable to open database file")."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    where = (
        f"sqlite:///{path} is relative to the current directory {os.getcwd()}; "
        f"an absolute path takes four slashes: sqlite:////{path}"
        if not os.path.isabs(path)
        else "create it first"
    )
    raise InvalidDatabaseURL(f"{shown}: the directory {directory} of the SQLite file does not exist ({where})")


def _require_driver(scheme: type[Engine], shown: str) -> None:
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
    if not scheme.networked:
        _check_file_path(str(params.get("database") or ""), shown)
    params.update(overrides)
    keys = config_keys()
    settings = {key: params.pop(key) for key in list(params) if key in keys}
    config = load_config(environ, preset=preset, **settings)
    for key, value in scheme.driver_defaults.items():
        params.setdefault(key, value)
    pool_class = POOL_CLASSES.get(scheme.database_class)
    try:
        database: Any
        if pool_class is None:
            driver_options = {key: value for key, value in overrides.items() if key not in keys}
            database = db_url.connect(target, unquote_password=True, unquote_user=True, **driver_options)
        else:
            scheme.apply_timeouts(params, config.pool)
            name = params.pop("database")
            database = pool_class(
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
