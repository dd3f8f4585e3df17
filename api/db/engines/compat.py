"""DatabaseCompat: what each engine, flavour and server version can do, as data.

``CAPABILITIES`` holds one entry per flavour (``postgres``, ``mysql``, ``mariadb``,
``sqlite``) with the value each flag has on a current server. ``VERSION_GATES``
says from which server version a flag holds (and what it is below that), and
``EXTENSION_GATES`` which PostgreSQL extension a flag needs. ``for_database(db)``
reads the live server (``api.db.engines.info.server_info``) and resolves every flag for it;
``require(flag)`` raises :class:`UnsupportedCapability` naming the version needed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Callable, TypeVar

import peewee

from api.db.engines import ENGINE_OF_FLAVOUR as _ENGINE_OF_FLAVOUR
from api.db.engines import FLAVOURS as _FLAVOURS
from api.db.exceptions import ConfigurationError, UnsupportedCapability

logger = logging.getLogger(__name__)

FLAVOURS = tuple(_FLAVOURS)
FLAVOUR_NAMES = {name: flavour.title for name, flavour in _FLAVOURS.items()}
ENGINE_OF_FLAVOUR = {name: engine.name for name, engine in _ENGINE_OF_FLAVOUR.items()}
_ALIASES = {"postgresql": "postgres", "pg": "postgres", "sqlite3": "sqlite"}

# What each flag means; docs/DATABASE_COMPATIBILITY.md shows the same table.
FLAGS: dict[str, str] = {
    "full_text_search": "built-in full-text search (tsvector, FULLTEXT indexes, FTS5)",
    "json_functions": "SQL functions that read JSON text (json_extract, ->>)",
    "auto_increment": "an AUTO_INCREMENT / AUTOINCREMENT column attribute",
    "sequence_support": "CREATE SEQUENCE objects and nextval()",
    "type_casting": "'full': any cast incl. ::type and ALTER COLUMN ... USING; 'limited': "
                    "CAST to a few types",
    "max_varchar": "largest n VARCHAR(n) accepts, in characters (utf8mb4 on MySQL/MariaDB); None: "
                   "not enforced",
    "transactional_ddl": "DDL inside a transaction is rolled back with it",
    "advisory_locks": "named application locks held by a session (pg_advisory_lock, GET_LOCK)",
    "add_column_if_not_exists": "ALTER TABLE ... ADD COLUMN IF NOT EXISTS",
    "instant_add_column": "ADD COLUMN with a constant DEFAULT (also NOT NULL) changes metadata only, "
                          "no table rewrite",
    "concurrent_index": "an index can be built while writers keep writing",
    "lock_timeout_setting": "the setting that bounds how long a statement waits for a lock",
    "max_identifier_length": "longest table/column/index name; None: no limit",
    "max_index_key_bytes": "largest index key (B-tree entry) in bytes; None: no limit",
    "native_json_type": "a JSON column type stored in a native, validated form (jsonb, MySQL JSON)",
    "partial_indexes": "CREATE INDEX ... WHERE predicate",
    "check_constraints": "CHECK constraints are enforced (not only parsed)",
    "vector_type": "a vector column type for embeddings (pgvector, MySQL 9 / MariaDB 11.7 VECTOR)",
}

# The matrix as the engines declare it (engines/postgres.py, mysql.py, sqlite.py): one source of truth.
CAPABILITIES: dict[str, dict[str, Any]] = {name: dict(f.capabilities) for name, f in _FLAVOURS.items()}
# Flags that hold only from a server version on: flavour -> flag -> (first version, value before it).
VERSION_GATES: dict[str, dict[str, tuple[tuple[int, ...], Any]]] = {
    name: dict(f.version_gates) for name, f in _FLAVOURS.items() if f.version_gates
}
# Flags that need a PostgreSQL extension available on the server: flag -> extension name.
EXTENSION_GATES: dict[str, dict[str, str]] = {
    name: dict(f.extension_gates) for name, f in _FLAVOURS.items() if f.extension_gates
}

_active_database: ContextVar[peewee.Database | None] = ContextVar("api_db_active_database", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def normalize_flavour(name: str) -> str:
    """``postgresql`` -> ``postgres``; a ConfigurationError for an engine the matrix does not know."""
    flavour = _ALIASES.get(name.lower().strip(), name.lower().strip())
    if flavour not in CAPABILITIES:
        raise ConfigurationError(f"unknown database type {name!r}; known: {', '.join(FLAVOURS)}")
    return flavour


def _check_capability(capability: str) -> None:
    if capability not in FLAGS:
        raise ConfigurationError(f"unknown capability {capability!r}; known: {', '.join(sorted(FLAGS))}")


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in version)


def _is_true(value: Any) -> bool:
    return value not in (False, None, 0, "")


class DatabaseCompat:
    """The capabilities of one flavour at one server version (the newest known when no version is given)."""

    CAPABILITIES = CAPABILITIES
    VERSION_GATES = VERSION_GATES
    EXTENSION_GATES = EXTENSION_GATES
    FLAGS = FLAGS

    def __init__(
        self,
        flavour: str,
        version: tuple[int, ...] | None = None,
        *,
        extensions: Iterable[str] | None = None,
    ) -> None:
        self.flavour = normalize_flavour(flavour)
        self.version = version
        # None: not known (newest assumed); a set: the extensions the server can install.
        self.extensions = None if extensions is None else frozenset(extensions)
        self.capabilities: dict[str, Any] = {name: self._resolve(name) for name in FLAGS}

    def __repr__(self) -> str:
        shown = _version_text(self.version) if self.version else "newest"
        return f"<DatabaseCompat {self.flavour} {shown}>"

    @property
    def engine(self) -> str:
        """The protocol family: ``postgres``, ``mysql`` (also for MariaDB) or ``sqlite``."""
        return ENGINE_OF_FLAVOUR[self.flavour]

    @property
    def name(self) -> str:
        return FLAVOUR_NAMES[self.flavour]

    def _resolve(self, capability: str) -> Any:
        value = CAPABILITIES[self.flavour][capability]
        gate = VERSION_GATES.get(self.flavour, {}).get(capability)
        if gate is not None and self.version is not None and tuple(self.version) < gate[0]:
            value = gate[1]
        extension = EXTENSION_GATES.get(self.flavour, {}).get(capability)
        if extension is not None and self.extensions is not None and extension not in self.extensions:
            value = False
        return value

    @classmethod
    def for_database(cls, database: peewee.Database) -> DatabaseCompat:
        """The capabilities of the live server behind ``database`` (flavour and version read from it)."""
        from api.db.engines.info import server_info

        info = server_info(database)
        extensions: set[str] | None = None
        if info.flavour == "postgres":
            extensions = set(info.available_extensions) | set(info.extensions)
        return cls(info.flavour, info.version, extensions=extensions)

    def get(self, capability: str) -> Any:
        """The value of ``capability`` here (a bool, a number, a setting name or None)."""
        _check_capability(capability)
        return self.capabilities[capability]

    def has(self, capability: str) -> bool:
        """True when ``capability`` is present (a limit of None or a False flag counts as absent)."""
        return _is_true(self.get(capability))

    def required_version(self, capability: str) -> str | None:
        """``"MariaDB 10.3.2"``: the first version of the flavour with ``capability``, if one gates it."""
        _check_capability(capability)
        gate = VERSION_GATES.get(self.flavour, {}).get(capability)
        if gate is None:
            return None
        return f"{self.name} {_version_text(gate[0])}"

    def explain_missing(self, capability: str) -> str:
        """Why ``capability`` is absent here and where it exists, in one sentence."""
        _check_capability(capability)
        running = f"{self.name} {_version_text(self.version)}" if self.version else self.name
        needed = self.required_version(capability)
        extension = EXTENSION_GATES.get(self.flavour, {}).get(capability)
        if needed and _is_true(CAPABILITIES[self.flavour][capability]):
            return f"{capability} needs {needed} or later; this server is {running}"
        if extension and _is_true(CAPABILITIES[self.flavour][capability]):
            return (
                f"{capability} needs the PostgreSQL extension {extension!r}, which {running} cannot install; "
                f"install it on the server (e.g. the pgvector package) and run CREATE EXTENSION {extension}"
            )
        elsewhere = [
            f"{FLAVOUR_NAMES[other]} {_version_text(VERSION_GATES[other][capability][0])}+"
            if capability in VERSION_GATES.get(other, {})
            else FLAVOUR_NAMES[other]
            for other in FLAVOURS
            if other != self.flavour and _is_true(CAPABILITIES[other][capability])
        ]
        where = f"; available on {', '.join(elsewhere)}" if elsewhere else ""
        return f"{capability} is not available on {self.name} at any version{where}"

    def require(self, capability: str) -> None:
        """Raise :class:`UnsupportedCapability` (naming the version needed) unless ``capability`` is there."""
        if not self.has(capability):
            raise UnsupportedCapability(
                self.explain_missing(capability),
                capability=capability,
                required_version=self.required_version(capability),
            )

    @staticmethod
    def is_capable(db_type: str, capability: str) -> bool:
        """Whether ``db_type`` (flavour or engine name) has ``capability`` on a current server version."""
        return DatabaseCompat(db_type).has(capability)

    @staticmethod
    def requires(
        db_type: str | tuple[str, ...] | None,
        capability: str,
        *,
        database: peewee.Database | None = None,
    ) -> Callable[[F], F]:
        """Decorate a migration written for ``db_type`` that needs ``capability``.

        On a live engine of another type, or one lacking the capability, the decorated
        function raises :class:`UnsupportedCapability` instead of running, which
        ``migrate_db`` records as ``skipped`` with the reason. ``db_type`` ``"mysql"``
        covers MySQL and MariaDB; ``None`` accepts any engine that has the capability.
        The live database is ``database=``, else the first positional argument (a
        Peewee database, or an object with ``.db`` / ``.database``), else the one
        set by :func:`using_database` around the call.
        """
        _check_capability(capability)
        wanted = _wanted_flavours(db_type)

        def decorate(function: F) -> F:
            @functools.wraps(function)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                live = database or _database_from(args)
                compat = DatabaseCompat.for_database(live)
                if compat.flavour not in wanted:
                    raise UnsupportedCapability(
                        f"{function.__name__} is written for "
                        f"{' / '.join(FLAVOUR_NAMES[f] for f in sorted(wanted))}; "
                        f"the live database is {compat.name}",
                        capability=capability,
                        required_version=None,
                    )
                compat.require(capability)
                return function(*args, **kwargs)

            wrapper.api_db_requires = (tuple(sorted(wanted)), capability)  # type: ignore[attr-defined]
            return wrapper  # type: ignore[return-value]

        return decorate


def _wanted_flavours(db_type: str | tuple[str, ...] | None) -> frozenset[str]:
    if db_type is None or db_type in ("*", "any"):
        return frozenset(FLAVOURS)
    names = (db_type,) if isinstance(db_type, str) else tuple(db_type)
    wanted: set[str] = set()
    for name in names:
        flavour = normalize_flavour(name)
        wanted.add(flavour)
        if flavour == "mysql":
            wanted.add("mariadb")  # "mysql" names the protocol family, as db_type() does
    return frozenset(wanted)


def _unwrap(candidate: Any) -> peewee.Database | None:
    if isinstance(candidate, peewee.DatabaseProxy):
        candidate = candidate.obj
    return candidate if isinstance(candidate, peewee.Database) else None


def _database_from(args: tuple[Any, ...]) -> peewee.Database:
    if args:
        first = args[0]
        for candidate in (first, getattr(first, "db", None), getattr(first, "database", None)):
            found = _unwrap(candidate)
            if found is not None:
                return found
    active = _active_database.get()
    if active is not None:
        return active
    raise ConfigurationError(
        "DatabaseCompat.requires cannot find the live database: pass database=, give the migration "
        "the migrator (or database) as its first argument, or call it inside "
        "api.db.engines.compat.using_database(db)"
    )


@contextlib.contextmanager
def using_database(database: peewee.Database) -> Iterator[peewee.Database]:
    """Make ``database`` the live database for ``requires``-decorated migrations that take no arguments."""
    token = _active_database.set(database)
    try:
        yield database
    finally:
        _active_database.reset(token)
