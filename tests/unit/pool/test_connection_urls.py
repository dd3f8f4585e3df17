"""connect(): URL schemes, environment fallback and typed errors, no server needed."""

from __future__ import annotations

from pathlib import Path

import peewee
import pytest
from playhouse.pool import PooledMySQLDatabase, PooledPostgresqlDatabase

from api.db import ConfigurationError, connect
from api.db.engines import db_type
from api.db.exceptions import DriverNotInstalled, InvalidDatabaseURL
from api.db.pool import connect as connection_module


@pytest.mark.parametrize(
    ("url", "cls", "family"),
    [
        ("postgresql://u:p@localhost:5432/app", PooledPostgresqlDatabase, "postgres"),
        ("postgres://u@localhost/app", PooledPostgresqlDatabase, "postgres"),
        ("mysql://root@127.0.0.1:3306/app", PooledMySQLDatabase, "mysql"),
        ("mariadb://root:pw@127.0.0.1/app", PooledMySQLDatabase, "mysql"),
        ("sqlite:////tmp/x.db", peewee.SqliteDatabase, "sqlite"),
        ("sqlite:///:memory:", peewee.SqliteDatabase, "sqlite"),
        ("postgresql://postgres@/app?host=/tmp/socketdir", PooledPostgresqlDatabase, "postgres"),
    ],
)
def test_schemes_map_to_databases(url: str, cls: type, family: str) -> None:
    database = connect(url)
    assert isinstance(database, cls)
    assert db_type(database) == family
    assert database.is_closed(), "connect() must not open a connection by itself"


def test_mariadb_url_keeps_credentials_and_database() -> None:
    database = connect("mariadb://app:s%40cret@db.internal:3307/shop")
    assert database.database == "shop"
    params = database.connect_params
    assert params["host"] == "db.internal" and params["port"] == 3307 and params["user"] == "app"
    assert (params.get("passwd") or params.get("password")) == "s@cret"
    assert params["charset"] == "utf8mb4"


def test_overrides_and_query_string_reach_the_pool() -> None:
    database = connect("postgresql://u@h/app?connect_timeout=3", max_connections=7)
    assert database.connect_params["connect_timeout"] == 3
    assert database._max_connections == 7


def test_database_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "mysql://root@127.0.0.1/envdb")
    assert connect().database == "envdb"


def test_missing_url_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        connect()


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("oracle://scott:tiger@db/orcl", "unsupported scheme 'oracle'"),
        ("postgresql://u:tiger@db:notaport/app", "malformed"),
        ("postgresql://u:tiger@db:5432/", "names no database"),
        ("postgresql:///app", "names no host"),
        ("just-a-string-with-tiger", "malformed"),
        ("sqlite://relative.db", "three slashes"),
        ("   ", "empty"),
    ],
)
def test_bad_urls_raise_typed_errors_without_the_password(url: str, fragment: str) -> None:
    with pytest.raises(InvalidDatabaseURL) as info:
        connect(url)
    assert fragment in str(info.value)
    assert "tiger" not in str(info.value).replace("with-***", "") or url == "just-a-string-with-tiger"
    assert isinstance(info.value, ValueError)


def test_password_never_in_error_text() -> None:
    with pytest.raises(InvalidDatabaseURL) as info:
        connect("oracle://scott:hunter2@db/orcl")
    assert "hunter2" not in str(info.value) and "scott" not in str(info.value)
    assert "unsupported scheme 'oracle'" in str(info.value)


def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = connection_module.importlib.util.find_spec

    def fake_find_spec(name: str, *args: object) -> object:
        # Simulates an environment without pymysql; installing/uninstalling packages in a test is not an
        # option.
        return None if name == "pymysql" else real(name, *args)

    monkeypatch.setattr(connection_module.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(DriverNotInstalled) as info:
        connect("mysql://root:hunter2@127.0.0.1/app")
    message = str(info.value)
    assert "pymysql" in message and "api-db[mysql]" in message and "hunter2" not in message
    assert isinstance(info.value, ImportError)


def test_sqlite_file_in_a_missing_directory_is_a_typed_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidDatabaseURL, match="relative to the current directory.*four slashes"):
        connect("sqlite:///tmp/x.db")  # tmp/x.db below the current directory, which has no tmp/
    with pytest.raises(InvalidDatabaseURL, match="does not exist"):
        connect(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert connect("sqlite:///x.db").database == "x.db"  # relative, in an existing directory
