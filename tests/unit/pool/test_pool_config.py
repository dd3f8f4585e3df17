"""Pool and retry settings: environment, presets, precedence, every validation error; backoff arithmetic."""

from __future__ import annotations

import os
import random
import socket

import pymysql
import pytest

from api.db import connect
from api.db.exceptions import ConfigurationError, ConnectionRejected, DatabaseUnavailable
from api.db.pool.config import PRESETS, PoolConfig, RetryConfig, environment_names, load_config
from api.db.pool.retry import backoff_delays, call_with_retry

FULL_ENV = {
    "POOL_MIN_CONNECTIONS": "3",
    "POOL_MAX_CONNECTIONS": "40",
    "POOL_ACQUIRE_TIMEOUT": "2.5",
    "POOL_MAX_LIFETIME": "1800",
    "POOL_IDLE_TIMEOUT": "120",
    "POOL_LEAK_THRESHOLD": "15",
    "APP_NAME": "billing-api",
    "DB_RETRY_MAX_ATTEMPTS": "7",
    "DB_RETRY_INITIAL_DELAY": "0.5",
    "DB_RETRY_MAX_DELAY": "10",
    "DB_RETRY_MULTIPLIER": "3",
    "DB_RETRY_JITTER": "false",
}


def test_defaults_match_the_documented_values() -> None:
    config = load_config({})
    assert config.pool == PoolConfig()
    assert (config.pool.min_connections, config.pool.max_connections) == (5, 100)
    assert (config.pool.acquire_timeout, config.pool.max_lifetime, config.pool.idle_timeout) == (
        30, 3600, 600
    )
    assert config.pool.leak_threshold == 0
    assert config.retry == RetryConfig(
        max_attempts=10, max_elapsed=60.0, initial_delay=1, max_delay=30, multiplier=2.0, jitter=True
    )


def test_every_variable_is_read_from_the_environment() -> None:
    config = load_config(FULL_ENV)
    pool, retry = config.pool, config.retry
    assert (pool.min_connections, pool.max_connections, pool.acquire_timeout) == (3, 40, 2.5)
    assert (pool.max_lifetime, pool.idle_timeout, pool.leak_threshold) == (1800, 120, 15)
    assert pool.app_name == "billing-api"
    assert (retry.max_attempts, retry.initial_delay, retry.max_delay, retry.multiplier, retry.jitter) == (
        7, 0.5, 10, 3, False,
    )  # fmt: skip


def test_keywords_beat_environment_which_beats_preset() -> None:
    env = {"POOL_MAX_CONNECTIONS": "30", "POOL_PRESET": "high_traffic"}
    config = load_config(env)
    assert config.preset == "high_traffic"
    assert config.pool.max_connections == 30  # environment over preset
    assert config.pool.acquire_timeout == PRESETS["high_traffic"]["acquire_timeout"]  # preset over default
    assert load_config(env, max_connections=25).pool.max_connections == 25  # keyword over environment
    # the default minimum follows a low maximum
    assert load_config({}, max_connections=2).pool.min_connections == 2
    assert load_config(env, timeout=4).pool.acquire_timeout == 4  # playhouse's name for it


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_is_valid(preset: str) -> None:
    config = load_config({}, preset=preset)
    assert config.preset == preset
    assert config.pool.min_connections <= config.pool.max_connections


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"POOL_MAX_CONNECTIONS": "many"}, "POOL_MAX_CONNECTIONS is 'many': expected a whole number"),
        ({"POOL_MIN_CONNECTIONS": "2.5"}, "POOL_MIN_CONNECTIONS is '2.5': expected a whole number"),
        ({"POOL_ACQUIRE_TIMEOUT": "soon"}, "POOL_ACQUIRE_TIMEOUT is 'soon': expected a number of seconds"),
        ({"POOL_ACQUIRE_TIMEOUT": "0"}, "POOL_ACQUIRE_TIMEOUT is '0': must be positive"),
        ({"POOL_MIN_CONNECTIONS": "-1"}, "POOL_MIN_CONNECTIONS is '-1': must be zero or more"),
        ({"POOL_MAX_CONNECTIONS": "0"}, "POOL_MAX_CONNECTIONS is '0': must be positive"),
        ({"POOL_LEAK_THRESHOLD": "-5"}, "POOL_LEAK_THRESHOLD is '-5'"),
        ({"POOL_MAX_LIFETIME": "inf"}, "POOL_MAX_LIFETIME is 'inf': expected a finite number"),
        ({"POOL_IDLE_TIMEOUT": "nan"}, "POOL_IDLE_TIMEOUT is 'nan'"),
        ({"DB_RETRY_MAX_ATTEMPTS": "0"}, "DB_RETRY_MAX_ATTEMPTS is '0': must be positive"),
        ({"DB_RETRY_INITIAL_DELAY": "-1"}, "DB_RETRY_INITIAL_DELAY is '-1'"),
        ({"DB_RETRY_MULTIPLIER": "0.5"}, "DB_RETRY_MULTIPLIER is '0.5'"),
        ({"DB_RETRY_JITTER": "maybe"}, "DB_RETRY_JITTER is 'maybe': expected true or false"),
        ({"POOL_MIN_CONNECTIONS": "10", "POOL_MAX_CONNECTIONS": "5"},
         "POOL_MIN_CONNECTIONS (10) is above POOL_MAX_CONNECTIONS (5)"),
        ({"DB_RETRY_INITIAL_DELAY": "60"},
         "DB_RETRY_INITIAL_DELAY (60.0) is above DB_RETRY_MAX_DELAY (30.0)"),
        ({"POOL_WARNING_PERCENT": "99"}, "POOL_WARNING_PERCENT (99.0) must not exceed POOL_CRITICAL_PERCENT"),
        ({"POOL_PRESET": "huge"}, "unknown pool preset 'huge'"),
        ({"POOL_RESET_SESSION": "sometimes"},
         "POOL_RESET_SESSION is 'sometimes': expected one of auto, always, never"),
    ],
)
def test_every_validation_error_names_the_variable(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_config(env)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_keyword_errors_name_keyword_and_variable() -> None:
    with pytest.raises(
        ConfigurationError, match=r"max_connections= \(environment variable POOL_MAX_CONNECTIONS\)"
    ):
        load_config({}, max_connections="x")
    with pytest.raises(ConfigurationError, match="unknown pool setting"):
        load_config({}, max_conections=3)
    with pytest.raises(ConfigurationError, match="expected a number"):
        load_config({}, acquire_timeout=True)
    with pytest.raises(ConfigurationError, match=r"app_name= \(environment variable APP_NAME\) is empty"):
        load_config({}, app_name="  ")
    assert load_config({"POOL_MAX_CONNECTIONS": "  "}).pool.max_connections == 100  # blank means unset


def test_connect_applies_settings_to_the_driver() -> None:
    env = {
        "APP_NAME": "orders",
        "DB_STATEMENT_TIMEOUT": "7",
        "DB_CONNECT_TIMEOUT": "3",
        "POOL_MAX_CONNECTIONS": "9",
    }
    pg = connect("postgresql://u:pw@db.internal/app", environ=env)
    session = f"@{socket.gethostname()}:{os.getpid()}"
    assert pg.connect_params["application_name"] == "orders" + session  # each process's sessions told apart
    assert pg.connect_params["connect_timeout"] == 3
    assert "-c statement_timeout=7000" in pg.connect_params["options"]
    assert pg._max_connections == 9
    my = connect("mariadb://u:pw@db.internal/app", environ=env)
    assert my.connect_params["program_name"] == "orders" + session
    assert my.connect_params["connect_timeout"] == 3
    assert my.connect_params["read_timeout"] > 7
    with pytest.raises(ConfigurationError, match="POOL_MAX_CONNECTIONS"):
        connect("postgresql://u@h/app", environ={"POOL_MAX_CONNECTIONS": "lots"})


def test_environment_names_cover_the_issue_list() -> None:
    names = set(environment_names())
    assert {
        "POOL_MIN_CONNECTIONS", "POOL_MAX_CONNECTIONS", "POOL_ACQUIRE_TIMEOUT", "POOL_MAX_LIFETIME",
        "POOL_IDLE_TIMEOUT", "POOL_LEAK_THRESHOLD", "APP_NAME", "DB_RETRY_MAX_ATTEMPTS",
        "DB_RETRY_INITIAL_DELAY", "DB_RETRY_MAX_DELAY", "DB_RETRY_MULTIPLIER", "DB_RETRY_JITTER",
    } <= names  # fmt: skip


def test_backoff_grows_and_is_capped() -> None:
    config = RetryConfig(max_attempts=6, initial_delay=1, max_delay=5, multiplier=2, jitter=False)
    assert list(backoff_delays(config)) == [1, 2, 4, 5, 5]


def test_jitter_stays_between_half_and_full_delay() -> None:
    config = RetryConfig(max_attempts=5, initial_delay=1, max_delay=30, multiplier=2, jitter=True)
    delays = list(backoff_delays(config, random.Random(7)))
    for delay, full in zip(delays, [1, 2, 4, 8]):
        assert full / 2 <= delay <= full
    assert delays != [1, 2, 4, 8]


# Real driver exception objects (what pymysql raises), built here because a server
# cannot be made to return them on demand from a unit test.
def _refused() -> pymysql.err.OperationalError:
    return pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)"
    )


def test_retry_sleeps_the_backoff_then_gives_up() -> None:
    slept: list[float] = []

    def always_refused() -> None:
        raise _refused()

    config = RetryConfig(max_attempts=3, initial_delay=0.5, max_delay=5, multiplier=2, jitter=False)
    with pytest.raises(DatabaseUnavailable, match="after 3 attempt"):
        call_with_retry(
            always_refused, config=config, db_type="mysql", target="mysql://h/db", sleep=slept.append
        )
    assert slept == [0.5, 1.0]


def test_retry_stops_at_once_on_authentication_failure() -> None:
    slept: list[float] = []

    def denied() -> None:
        raise pymysql.err.OperationalError(
            1045, "Access denied for user 'app'@'localhost' (using password: YES)"
        )

    config = RetryConfig(max_attempts=5, initial_delay=1, max_delay=5, multiplier=2, jitter=False)
    with pytest.raises(ConnectionRejected, match="check the user name and password"):
        call_with_retry(
            denied, config=config, db_type="mysql", target="mysql://app:***@h/db", sleep=slept.append
        )
    assert slept == []
