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
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, urlencode, urlsplit

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


# libpq keyword DSN items: key = value, the value bare or in single quotes (\' and \\ escaped).
_DSN_ITEM = re.compile(r"\s*(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>'(?:[^'\\]|\\.)*'|[^\s']*)")
# One host of a host list: [IPv6]:port or name:port, the port optional.
_HOST_ITEM = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<name>[^:\[\]/?#@]+))(?::(?P<port>[^:]*))?$")


def is_keyword_dsn(url: str) -> bool:
    """``host=... dbname=...``: a libpq keyword DSN rather than a URL."""
    return "://" not in url and _DSN_ITEM.match(url) is not None


def dsn_to_url(dsn: str) -> str:
    """The ``postgresql://`` URL of a libpq keyword DSN; keywords but user, password, dbname: the query."""
    items: dict[str, str] = {}
    position, count = 0, 0
    while position < len(dsn.rstrip()):
        match = _DSN_ITEM.match(dsn, position)
        count += 1
        if match is None:
            raise InvalidDatabaseURL(
                f"the keyword DSN cannot be read at item {count}: expected key=value "
                "(quote values with spaces in single quotes)"
            )
        value = match.group("value")
        if value.startswith("'"):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        items[match.group("key").lower()] = value
        position = match.end()
    user, password = items.pop("user", ""), items.pop("password", "")
    database = items.pop("dbname", "")
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    query = urlencode(items, safe=",:")
    path = quote(database, safe="") + ("?" + query if query else "")
    return f"postgresql://{auth}{'@' if auth else ''}/{path}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """(user info, hosts, the rest from the path on) of the text after ``scheme://``."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, hosts = authority.rpartition("@")
    return userinfo + at, hosts, tail


def _host_list(hosts: str, default_port: int | None) -> tuple[list[str], list[str]]:
    """The hosts and ports of ``h1:p1,[v6]:p2``; errors name the host by position, never the URL."""
    names: list[str] = []
    ports: list[str] = []
    items = hosts.split(",")
    for index, item in enumerate(items, 1):
        where = f"host {index} of {len(items)} in the database URL"
        match = _HOST_ITEM.match(item)
        if match is None:
            raise InvalidDatabaseURL(
                f"{where} is empty or malformed: write host[:port] or [IPv6]:port, separated by commas"
            )
        port = match.group("port")
        if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
            raise InvalidDatabaseURL(f"the port of {where} is not a number from 1 to 65535")
        names.append(match.group("v6") or match.group("name"))
        ports.append(port or str(default_port or ""))
    return names, ports


def expand_host_list(url: str, engine: type[Engine]) -> str:
    """``scheme://u@h1:p1,h2:p2/db?x`` as ``scheme://u@/db?host=h1,h2&port=p1,p2&x`` (or unchanged)."""
    scheme, _, rest = url.partition("://")
    userinfo, hosts, tail = _split_authority(rest)
    if "," not in hosts:
        return url
    names, ports = _host_list(hosts, engine.default_port)
    path, _, query = tail.partition("?")
    query, hash_mark, fragment = query.partition("#")
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in ("host", "port") for key, _ in pairs):
        raise InvalidDatabaseURL(
            "the database URL lists hosts both before the path and in host= / port=: give them in one place"
        )
    listed = urlencode([("host", ",".join(names)), ("port", ",".join(ports))], safe=",:%")
    query = "&".join(filter(None, (listed, query)))
    return f"{scheme}://{userinfo}{path or '/'}?{query}{hash_mark}{fragment}"


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
    if is_keyword_dsn(url):
        url = dsn_to_url(url)
    register_url_secret(url)
    scheme, raw = _scheme_of(url)
    if scheme.networked:
        url = expand_host_list(url, scheme)
    parts, _port = _split_checked(url, len(raw))
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
    replicas: Sequence[str] | None = None,
    **overrides: Any,
) -> peewee.Database:
    """Return a Peewee database for ``url`` (or ``$DATABASE_URL``); no connection is opened yet.

    ``postgresql://`` / ``postgres://`` and ``mysql://`` / ``mariadb://`` give pooled
    databases (:mod:`api.db.pool.pool`, built on ``playhouse.pool``); ``sqlite:///path`` a
    plain SQLite database. Pool and retry settings (:mod:`api.db.pool.config`) come from
    ``overrides``, else ``environ`` (default ``os.environ``), else ``preset``; other
    query-string parameters and ``overrides`` are passed to the driver. ``replicas`` (else
    ``$DATABASE_REPLICA_URLS``, comma-separated) gives a routing database
    (:mod:`api.db.pool.routing`): reads outside transactions on replicas, the rest on ``url``.
    """
    install_log_filter()
    replica_urls = replica_urls_from(replicas, os.environ if environ is None else environ)
    database = _build(url, preset, environ, overrides, routed=bool(replica_urls))
    if replica_urls:
        from api.db.pool.routing import attach_replicas

        members = [_build(item, preset, environ, overrides, routed=False) for item in replica_urls]
        attach_replicas(database, members)
    return database


# A new URL starts where a scheme follows a comma: host lists keep their commas.
_URL_START = re.compile(r",\s*(?=[A-Za-z][A-Za-z0-9+.\-]*://)")
REPLICA_URLS_ENV = "DATABASE_REPLICA_URLS"


def replica_urls_from(replicas: Sequence[str] | None, environ: Mapping[str, str]) -> list[str]:
    """The replica URLs: ``replicas`` if given, else ``$DATABASE_REPLICA_URLS`` split at each new scheme."""
    if replicas is None:
        text = environ.get(REPLICA_URLS_ENV, "").strip()
        return [item.strip() for item in _URL_START.split(text) if item.strip()] if text else []
    if isinstance(replicas, str):
        raise ConfigurationError("replicas= takes a list of URLs, not one string: replicas=[url, ...]")
    return [resolve_url(item) for item in replicas]


def _build(
    url: str | None, preset: str | None, environ: Mapping[str, str] | None, overrides: dict[str, Any],
    *, routed: bool,
) -> peewee.Database:  # fmt: skip
    """One database (a pool for server engines) for ``url``, with its state recorded."""
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
    base = POOL_CLASSES.get(scheme.database_class)
    try:
        database: Any
        if base is None:
            driver_options = {key: value for key, value in overrides.items() if key not in keys}
            database = db_url.connect(target, unquote_password=True, unquote_user=True, **driver_options)
        else:
            database = _build_pool(scheme, base, params, config, shown, routed)
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


# target_session_attrs values that ask libpq for a writable member.
WRITABLE_TARGETS = frozenset({"read-write", "primary"})


def _build_pool(
    scheme: type[Engine], base: Any, params: dict[str, Any], config: Any, shown: str, routed: bool
) -> Any:
    """The failover-aware pool (routing when ``routed``) for the parsed ``params``."""
    from api.db.pool.failover import cluster_class

    host_list = "," in str(params.get("host") or "")
    pool_class: Any = cluster_class(base, host_list=host_list and not scheme.driver_host_lists)
    if routed:
        from api.db.pool.routing import routed_class

        pool_class = routed_class(pool_class)
    scheme.apply_timeouts(params, config.pool)
    name = params.pop("database")
    database = pool_class(name, pool_config=config.pool, retry_config=config.retry, target=shown, **params)
    wants_writer = str(params.get("target_session_attrs")) in WRITABLE_TARGETS
    database.expects_primary = routed or host_list or wants_writer
    return database
