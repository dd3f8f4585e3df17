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
import re
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
from api.db.redact import install_log_filter, redact_url, register_secret, register_url_secret

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


# Schemes of other products, named back in the error (any other text before :// may be a password fragment).
FOREIGN_SCHEMES = frozenset({
    "oracle", "mssql", "sqlserver", "mongodb", "mongodb+srv", "redis", "rediss", "http", "https",
    "cockroachdb",
    "db2", "snowflake", "clickhouse", "jdbc", "odbc", "file", "ftp", "sqlite3", "mysql+pymysql",
    "postgresql+psycopg2", "postgres+psycopg2",
})  # fmt: skip
_SHAPE = "scheme://[user[:password]@]host[:port]/database"
_ENCODE_HINT = (
    "percent-encode @ : / ? # % and spaces in the user and password (urllib.parse.quote(pw, safe=''))"
)
_SCHEME_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*")


def _malformed(
    what: str, start: int | None = None, end: int | None = None, hint: str = _ENCODE_HINT
) -> InvalidDatabaseURL:
    """An InvalidDatabaseURL naming the wrong part by kind and position, never by its text."""
    if start is None:
        where = ""
    elif end is None or end - start <= 1:
        where = f" at character {start + 1}"
    else:
        where = f" at characters {start + 1}-{end}"
    return InvalidDatabaseURL(f"malformed database URL: {what}{where}; {hint}")


def _authority_bounds(url: str, scheme_end: int) -> tuple[int, int, int]:
    """Start and end of the authority, and where its host part starts (after the last '@')."""
    start = scheme_end + 3
    end = len(url)
    for sep in "/?#":
        found = url.find(sep, start)
        if found != -1:
            end = min(end, found)
    at = url.rfind("@", start, end)
    return start, end, (at + 1 if at != -1 else start)


def _scheme_of(url: str) -> tuple[type[Engine], str]:
    """The engine named by the scheme; the scheme is echoed only when it names a known product."""
    scheme_end = url.find("://")
    raw = url[:scheme_end] if scheme_end > 0 else ""
    if not raw or not _SCHEME_TEXT.fullmatch(raw):
        raise InvalidDatabaseURL(
            f"malformed database URL: it does not start with a scheme://; expected {_SHAPE}"
        )
    engine = SCHEMES.get(raw.lower())
    if engine is None:
        supported = ", ".join(f"{name}://" for name in SCHEMES)
        named = repr(raw.lower()) if raw.lower() in FOREIGN_SCHEMES else f"({len(raw)} characters before ://)"
        raise InvalidDatabaseURL(f"unsupported scheme {named}; use one of {supported}")
    return engine, raw


def _split_checked(url: str, scheme_end: int) -> tuple[SplitResult, int | None]:
    """``urlsplit`` and the port, with errors that give the position and kind of the wrong part."""
    start, end, host_start = _authority_bounds(url, scheme_end)
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _malformed("the host has an unbalanced '[' or ']' (IPv6 brackets)", host_start, end) from None
    try:
        port = parts.port
    except ValueError:
        colon = url.rfind(":", url.rfind("]", host_start, end) + 1 or host_start, end)
        raise _malformed("the port is not a number from 1 to 65535", colon + 1, end) from None
    if port == 0:
        raise _malformed("port 0 is not a valid port", None, None, "give the server's port, or leave it out")
    return parts, port


def parse_url(url: str) -> tuple[type[Engine], str]:
    """Validate ``url`` and return its engine and the URL playhouse.db_url should see.

    Errors name the wrong part by kind and character position and never quote the URL's text,
    which may hold a password that a missing ``@`` or an unencoded character has moved elsewhere.
    """
    register_url_secret(url)
    scheme, raw = _scheme_of(url)
    scheme_end = len(raw)
    parts, _port = _split_checked(url, scheme_end)
    if scheme.networked:
        _check_server_url(url, parts, raw)
    elif not parts.path.lstrip("/") and parts.netloc:
        raise InvalidDatabaseURL(
            f"a {raw}:// URL with two slashes reads the path as a host name; "
            "SQLite URLs take three slashes: sqlite:///path/to/file.db"
        )
    # Swap the scheme textually: urlunsplit would drop the empty authority of sqlite:////abs/path.
    target = scheme.playhouse_scheme + url[len(parts.scheme):]
    return scheme, target


def _check_server_url(url: str, parts: SplitResult, raw: str) -> None:
    """A server URL names a host and a database, and has no '@' or '#' outside the credentials."""
    start, end, host_start = _authority_bounds(url, len(raw))
    stray = url.find("@", end)
    if stray != -1:
        raise _malformed(
            "an '@' after the host part (a '/', '?' or '#' in the password ends it early)", stray
        )
    if parts.fragment or "#" in url:
        raise _malformed("a '#' starts a fragment, which database URLs do not have", url.find("#"))
    if not parts.path.lstrip("/"):
        raise InvalidDatabaseURL(
            f"the {raw}:// URL names no database: add it as the path, e.g. {raw}://host/dbname"
        )
    if not parts.hostname and "host=" not in parts.query:
        raise InvalidDatabaseURL(f"the {raw}:// URL names no host: use {raw}://host[:port]/dbname")

def _check_file_path(path: str, shown: str) -> None:
    """A database file's directory must exist (else SQLite fails later: "unable to open database file")."""
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    if "@" in path:  # user:password@host written into a file URL: never echo it
        raise InvalidDatabaseURL(
            "a SQLite URL takes no user, password or host (its path holds '@'): "
            "use sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    where = (
        f"sqlite:///{path} is relative to the current directory {os.getcwd()}; "
        f"an absolute path takes four slashes: sqlite:////{path}"
        if not os.path.isabs(path)
        else "create it first"
    )
    raise InvalidDatabaseURL(
        f"{shown}: the directory {directory} of the SQLite file does not exist ({where})"
    )


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
    install_log_filter()
    url = resolve_url(url)
    for key in ("password", "passwd"):
        register_secret(overrides.get(key))
    scheme, target = parse_url(url)
    shown = redact_url(url)
    _require_driver(scheme, shown)
    try:
        params = db_url.parse(target, unquote_password=True, unquote_user=True)
    except (ValueError, RuntimeError, TypeError):
        raise InvalidDatabaseURL(
            f"cannot read the {scheme.url_schemes[0]}:// URL's parameters: check the query string "
            "(key=value pairs joined by &)"
        ) from None
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
        raise InvalidDatabaseURL(
            f"cannot build a database from {shown}: {type(exc).__name__} from the driver options; "
            "check the query-string parameters and keyword arguments"
        ) from None
    state = state_of(database)
    state.url = shown
    state.config = config
    if config.pool.diagnostics:
        QueryMonitor.install(database, slow_query_ms=config.pool.slow_query_ms)
    logger.debug("database configured from %s", shown)
    return database
