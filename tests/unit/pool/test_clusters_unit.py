"""Cluster support without a server: host lists, keyword DSNs, the time budget, read detection, roles."""

from __future__ import annotations

import pytest

from api.db import connect
from api.db.engines.mysql import galera_role
from api.db.engines.postgres import PostgresEngine
from api.db.error_handler import ErrorCategory, classify_error
from api.db.exceptions import DatabaseUnavailable, InvalidDatabaseURL
from api.db.pool.config import RetryConfig, load_config
from api.db.pool.connect import dsn_to_url, parse_url, replica_urls_from
from api.db.pool.retry import call_with_retry, classify_connect_error
from api.db.pool.routing import is_read


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p@h1:5432,h2:5433/db?target_session_attrs=read-write",
     "postgresql+pool://u:p@/db?host=h1,h2&port=5432,5433&target_session_attrs=read-write"),
    ("postgresql://u@[::1]:5432,[fe80::1]/db", "postgresql+pool://u@/db?host=::1,fe80::1&port=5432,5432"),
    ("mysql://u@h1,h2:3307/db", "mysql+pool://u@/db?host=h1,h2&port=3306,3307"),
    ("postgresql://u@h/db", "postgresql+pool://u@h/db"),
    ("postgresql://u@/db?host=a,b&port=1,2", "postgresql+pool://u@/db?host=a,b&port=1,2"),
])  # fmt: skip
def test_host_lists_become_the_query_form(url: str, expected: str) -> None:
    assert parse_url(url)[1] == expected


def test_keyword_dsn_becomes_a_url_with_its_password_quoted() -> None:
    url = dsn_to_url(
        "host=h1,h2 port=1,2 dbname=app user=u password='a b\\'c' target_session_attrs=primary"
    )
    assert url == "postgresql://u:a%20b%27c@/app?host=h1,h2&port=1,2&target_session_attrs=primary"
    assert parse_url("host=h dbname=app user=u")[1] == "postgresql+pool://u@/app?host=h"


@pytest.mark.parametrize("url, words", [
    ("postgresql://u:s3cret@h1:abc,h2/db", "the port of host 1 of 2"),
    ("postgresql://u:s3cret@h1,,h2/db", "host 2 of 3"),
    ("postgresql://u:s3cret@h1:70000,h2/db", "the port of host 1 of 2"),
    ("host=h password=s3cret 'x", "item 3"),
    ("postgresql://u:s3cret@h1,h2/db?host=h3", "both"),
])  # fmt: skip
def test_bad_host_lists_name_the_part_and_never_the_password(url: str, words: str) -> None:
    with pytest.raises(InvalidDatabaseURL) as caught:
        parse_url(url)
    assert words in str(caught.value) and "s3cret" not in str(caught.value)


def test_replica_urls_split_at_each_scheme_not_at_host_list_commas() -> None:
    env = {"DATABASE_REPLICA_URLS": "postgresql://u@a:1,b:2/db, postgresql://u@c/db"}
    assert replica_urls_from(None, env) == ["postgresql://u@a:1,b:2/db", "postgresql://u@c/db"]
    assert replica_urls_from(None, {}) == []


def test_connect_with_replicas_builds_a_routing_database_without_connecting() -> None:
    db = connect(
        "postgresql://u@127.0.0.1:1,127.0.0.1:2/db", replicas=["postgresql://u@127.0.0.1:3/db"]
    )
    try:
        assert [m["member"] for m in db.members()] == ["primary", "replica1"]
        assert db.expects_primary and db.is_closed()
    finally:
        db.close_all()


def test_mysql_host_list_is_tried_by_api_db() -> None:
    db = connect("mysql://u@127.0.0.1:1,127.0.0.1:2/db")
    assert db.host_list() == [("127.0.0.1", 1), ("127.0.0.1", 2)]
    assert (db.connect_params["host"], db.connect_params["port"]) == ("127.0.0.1", 1)


def test_routing_and_retry_settings_load_from_the_environment() -> None:
    env = {"DB_MAX_REPLICA_LAG": "2.5", "DB_REPLICA_FALLBACK": "fail", "DB_RETRY_MAX_ELAPSED": "45",
           "DB_POOLER": "pgbouncer"}  # fmt: skip
    config = load_config(env)
    assert config.routing.max_replica_lag == 2.5 and config.routing.replica_fallback == "fail"
    assert config.retry.max_elapsed == 45 and config.pool.pooler == "pgbouncer"
    assert load_config({}).routing.read_your_writes == 2.0


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_retry_stops_when_the_time_budget_is_spent_before_the_count() -> None:
    clock = _Clock()
    config = RetryConfig(
        max_attempts=100, max_elapsed=10, initial_delay=1, max_delay=4, jitter=False
    )

    def refuse() -> None:
        raise RuntimeError("could not connect to server: Connection refused")

    with pytest.raises(DatabaseUnavailable):
        call_with_retry(
            refuse, config=config, db_type="postgres", target="t", sleep=clock.sleep, clock=clock
        )
    assert clock.now == pytest.approx(10.0)  # 1 + 2 + 4 + 3 (the last pause cut to the budget)


def test_read_only_members_are_polled_every_second_whatever_the_count() -> None:
    clock = _Clock()
    config = RetryConfig(
        max_attempts=2, max_elapsed=30, initial_delay=1, max_delay=30, jitter=False
    )
    calls = []

    def promoting() -> str:
        calls.append(clock.now)
        if clock.now < 12:
            raise RuntimeError('connection to server at "h", port 1 failed: session is read-only')
        return "connected"

    assert call_with_retry(promoting, config=config, db_type="postgres", target="t", sleep=clock.sleep,
                           clock=clock) == "connected"  # fmt: skip
    assert len(calls) == 13 and max(b - a for a, b in zip(calls, calls[1:])) == 1.0


def test_a_host_list_error_is_as_hopeful_as_its_most_hopeful_host() -> None:
    text = ('connection to server at "h", port 1 failed: FATAL: database "x" does not exist '
            'connection to server at "h", port 2 failed: Connection refused')  # fmt: skip
    assert classify_error(RuntimeError(text), "postgres").category is ErrorCategory.UNKNOWN_DATABASE
    assert (
        classify_connect_error(RuntimeError(text), "postgres").category
        is ErrorCategory.CONNECTION_LOST
    )
    only = 'connection to server at "h", port 1 failed: FATAL: database "x" does not exist'
    assert (
        classify_connect_error(RuntimeError(only), "postgres").category
        is ErrorCategory.UNKNOWN_DATABASE
    )


@pytest.mark.parametrize("sql, read", [
    ("SELECT 1", True),
    ("  /* c */ select * from t", True),
    ("(SELECT 1) UNION (SELECT 2)", True),
    ("WITH x AS (SELECT 1) SELECT * FROM x", True),
    ("SELECT * FROM t FOR UPDATE", False),
    ("SELECT nextval('s')", False),
    ("SELECT pg_advisory_lock(1)", False),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", False),
    ("INSERT INTO t VALUES (1)", False),
    ("SELECT 1 INTO t2", False),
])  # fmt: skip
def test_reads_that_a_replica_may_answer(sql: str, read: bool) -> None:
    assert is_read(sql) is read


@pytest.mark.parametrize("status, problem", [
    ({"wsrep_ready": "ON", "wsrep_local_state_comment": "Synced", "wsrep_cluster_size": "3"}, None),
    ({"wsrep_ready": "ON", "wsrep_local_state_comment": "Donor/Desynced", "wsrep_cluster_size": "3"},
     "Donor"),
    ({"wsrep_ready": "OFF", "wsrep_local_state_comment": "Synced", "wsrep_cluster_size": "3"}, "wsrep_ready"),
    ({"wsrep_ready": "ON", "wsrep_local_state_comment": "Synced", "wsrep_cluster_size": "1",
      "wsrep_cluster_status": "non-Primary"}, "non-Primary"),
])  # fmt: skip
def test_galera_node_takes_traffic_only_when_ready_and_synced(
    status: dict[str, str], problem: str | None
) -> None:
    role = galera_role(status)
    assert role.role == "galera_node"
    assert (role.not_ready is None) if problem is None else (problem in str(role.not_ready))


def test_pooled_startup_options_drop_only_the_timeout() -> None:
    params = {"options": "-c statement_timeout=300000 -c search_path=app"}
    assert PostgresEngine.drop_pooled_startup_options(params)
    assert params == {"options": "-c search_path=app"}
    params = {"options": "-c statement_timeout=300000"}
    assert PostgresEngine.drop_pooled_startup_options(params) and params == {}
    assert not PostgresEngine.drop_pooled_startup_options({})
    assert PostgresEngine.transaction_settings(load_config({}, preset="production").pool) == (
        "SET LOCAL statement_timeout = 300000"
    )


def test_a_configured_pooler_gets_no_startup_options() -> None:
    db = connect("postgresql://u@127.0.0.1:1/db", preset="production", pooler="pgbouncer")
    assert (
        "options" not in db.connect_params
        and db.pooled
        and db.pooler_report() == "pgbouncer (configured)"
    )
    plain = connect("postgresql://u@127.0.0.1:1/db", preset="production")
    assert plain.connect_params["options"] == "-c statement_timeout=300000" and not plain.pooled


def test_only_a_silent_close_counts_as_unanswered() -> None:
    import psycopg2

    silent = psycopg2.OperationalError(
        "server closed the connection unexpectedly\n\tThis probably means ..."
    )
    assert PostgresEngine.unanswered(silent)
    told = psycopg2.OperationalError("terminating connection due to administrator command")
    assert not PostgresEngine.unanswered(told)
