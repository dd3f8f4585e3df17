"""The capability matrix as data: complete, version-gated, and explained when something is missing."""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from api.db import ConfigurationError, DatabaseCompat, UnsupportedCapability
from api.db.engines.compat import (
    CAPABILITIES,
    EXTENSION_GATES,
    FLAGS,
    FLAVOURS,
    VERSION_GATES,
    using_database,
)

ISSUE_FLAGS = {
    "full_text_search", "json_functions", "auto_increment", "sequence_support", "type_casting", "max_varchar",
    "transactional_ddl", "advisory_locks", "add_column_if_not_exists", "instant_add_column",
    "concurrent_index",
    "lock_timeout_setting", "max_identifier_length", "max_index_key_bytes", "native_json_type",
    "partial_indexes",
    "check_constraints", "vector_type",
}


def test_every_engine_has_every_flag_and_every_flag_is_described() -> None:
    assert set(CAPABILITIES) == set(FLAVOURS) == {"postgres", "mysql", "mariadb", "sqlite"}
    assert set(FLAGS) == ISSUE_FLAGS
    for flavour, flags in CAPABILITIES.items():
        assert set(flags) == ISSUE_FLAGS, flavour
    for flavour, gates in VERSION_GATES.items():
        assert set(gates) <= ISSUE_FLAGS, flavour
    assert all(set(g) <= ISSUE_FLAGS for g in EXTENSION_GATES.values())


def test_type_casting_values() -> None:
    assert {CAPABILITIES[f]["type_casting"] for f in FLAVOURS} == {"full", "limited"}


@pytest.mark.parametrize(
    ("flavour", "version", "flag", "expected"),
    [
        ("postgres", (10, 5), "instant_add_column", False),
        ("postgres", (11, 0), "instant_add_column", True),
        ("mysql", (8, 0, 11), "instant_add_column", False),
        ("mysql", (8, 0, 12), "instant_add_column", True),
        ("mysql", (8, 0, 15), "check_constraints", False),
        ("mysql", (5, 7, 6), "max_index_key_bytes", 767),
        ("mariadb", (10, 2, 9), "instant_add_column", False),
        ("mariadb", (10, 11, 19), "instant_add_column", True),
        ("mariadb", (10, 2, 9), "sequence_support", False),
        ("mariadb", (10, 11, 19), "vector_type", False),
        ("mariadb", (11, 7, 2), "vector_type", True),
        ("sqlite", (3, 37, 2), "json_functions", False),
        ("sqlite", (3, 40, 1), "json_functions", True),
    ],
)
def test_version_gates(flavour: str, version: tuple[int, ...], flag: str, expected: Any) -> None:
    assert DatabaseCompat(flavour, version).get(flag) == expected


def test_vector_type_on_postgres_follows_the_extension() -> None:
    assert DatabaseCompat("postgres", (15, 2), extensions=set()).has("vector_type") is False
    assert DatabaseCompat("postgres", (15, 2), extensions={"vector"}).has("vector_type") is True
    message = DatabaseCompat("postgres", (15, 2), extensions=set()).explain_missing("vector_type")
    assert "'vector'" in message and "CREATE EXTENSION vector" in message


def test_require_names_the_version_needed() -> None:
    old = DatabaseCompat("mariadb", (10, 2, 9))
    with pytest.raises(UnsupportedCapability) as caught:
        old.require("instant_add_column")
    assert caught.value.capability == "instant_add_column"
    assert caught.value.required_version == "MariaDB 10.3.2"
    assert "needs MariaDB 10.3.2 or later; this server is MariaDB 10.2.9" in str(caught.value)


def test_require_says_where_a_never_present_capability_exists() -> None:
    with pytest.raises(UnsupportedCapability) as caught:
        DatabaseCompat("mysql", (8, 0, 36)).require("add_column_if_not_exists")
    assert caught.value.required_version is None
    assert "not available on MySQL at any version" in str(caught.value)
    assert "PostgreSQL 9.6+" in str(caught.value) and "MariaDB 10.0.2+" in str(caught.value)


def test_is_capable_uses_the_static_matrix_and_aliases() -> None:
    assert DatabaseCompat.is_capable("postgresql", "transactional_ddl") is True
    assert DatabaseCompat.is_capable("mysql", "transactional_ddl") is False
    assert DatabaseCompat.is_capable("sqlite", "max_identifier_length") is False  # None: no limit
    assert DatabaseCompat.is_capable("postgres", "max_identifier_length") is True


def test_unknown_names_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown database type"):
        DatabaseCompat("oracle")
    with pytest.raises(ConfigurationError, match="unknown capability"):
        DatabaseCompat.is_capable("postgres", "time_travel")
    with pytest.raises(ConfigurationError, match="unknown capability"):
        DatabaseCompat.requires("postgres", "time_travel")


def test_requires_finds_the_database_in_the_first_argument_or_the_context() -> None:
    database = peewee.SqliteDatabase(":memory:")

    @DatabaseCompat.requires("sqlite", "partial_indexes")
    def with_argument(migrator: Any) -> str:
        return "ran"

    @DatabaseCompat.requires("sqlite", "transactional_ddl")
    def without_argument() -> str:
        return "ran"

    class Migrator:
        db = database

    assert with_argument(database) == "ran"
    assert with_argument(Migrator()) == "ran"
    with pytest.raises(ConfigurationError, match="cannot find the live database"):
        without_argument()
    with using_database(database):
        assert without_argument() == "ran"
    assert without_argument.api_db_requires == (("sqlite",), "transactional_ddl")  # type: ignore[attr-defined]


def test_requires_refuses_another_engine_and_a_missing_capability() -> None:
    database = peewee.SqliteDatabase(":memory:")

    @DatabaseCompat.requires("mysql", "auto_increment")
    def mysql_only(migrator: Any) -> None:
        raise AssertionError("must not run on SQLite")

    @DatabaseCompat.requires("sqlite", "advisory_locks")
    def needs_locks(migrator: Any) -> None:
        raise AssertionError("SQLite has no advisory locks")

    with pytest.raises(
        UnsupportedCapability, match="written for MariaDB / MySQL; the live database is SQLite"
    ):
        mysql_only(database)
    with pytest.raises(UnsupportedCapability, match="advisory_locks is not available on SQLite"):
        needs_locks(database)
