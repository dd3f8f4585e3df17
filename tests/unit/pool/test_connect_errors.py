"""Connect-time driver errors as psycopg2 / pymysql raise them, classified for the retry decision.

The messages are the exact texts the local servers produced (checked against PostgreSQL 15/18 and
MariaDB 10.11); building the exception objects here stands in for servers in states a unit test
cannot produce on demand (starting up, socket missing).
"""

from __future__ import annotations

import psycopg2
import pymysql
import pytest

from api.db.error_handler import FATAL_CONFIGURATION, ErrorCategory, classify_error

C = ErrorCategory


@pytest.mark.parametrize(
    ("exc", "family", "category"),
    [
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  password '
                                   'authentication failed for user "app"'), "postgres", C.AUTHENTICATION),
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  role '
                                   '"nobody" does not exist'), "postgres", C.AUTHENTICATION),
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  database '
                                   '"nope" does not exist'), "postgres", C.UNKNOWN_DATABASE),
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 1 failed: Connection '
                                   'refused\n\tIs the server running on that host and accepting TCP/IP '
                                   'connections?'), "postgres", C.CONNECTION_LOST),
        (psycopg2.OperationalError('connection to server on socket "/tmp/x/.s.PGSQL.5432" failed: No such '
                                   'file or directory\n\tIs the server running locally and accepting '
                                   'connections on that socket?'), "postgres", C.CONNECTION_LOST),
        (psycopg2.OperationalError('connection to server at "127.0.0.1", port 5432 failed: FATAL:  the '
                                   'database system is starting up'), "postgres", C.CONNECTION_LOST),
        (psycopg2.InterfaceError("connection already closed"), "postgres", C.CONNECTION_LOST),
        (pymysql.err.OperationalError(1045, "Access denied for user 'app'@'127.0.0.1' (using password: YES)",
                                      sqlstate="28000"), "mysql", C.AUTHENTICATION),
        (pymysql.err.OperationalError(1049, "Unknown database 'nope'", sqlstate="42000"), "mysql",
         C.UNKNOWN_DATABASE),
        (pymysql.err.OperationalError(2003,
                                      "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection "
                                      "refused)"), "mysql", C.CONNECTION_LOST),
        (pymysql.err.OperationalError(1040, "Too many connections", sqlstate="08004"), "mysql",
         C.TOO_MANY_CONNECTIONS),
    ],
)  # fmt: skip
def test_connect_errors_are_classified_for_retry(
    exc: BaseException, family: str, category: ErrorCategory
) -> None:
    info = classify_error(exc, family)
    assert info.category == category
    assert info.is_transient == (category in (C.CONNECTION_LOST, C.TOO_MANY_CONNECTIONS))
    assert (category in FATAL_CONFIGURATION) == (category in (C.AUTHENTICATION, C.UNKNOWN_DATABASE))


def test_mysql_errno_wins_over_sqlstate() -> None:
    # pymysql >= 1.1 also carries the SQLSTATE; 1060's is 42S21, which says less than the errno.
    exc = pymysql.err.OperationalError(1060, "Duplicate column name 'a'", sqlstate="42S21")
    assert classify_error(exc, "mysql").code == "1060"
    assert classify_error(exc, "mysql").category == C.DUPLICATE_COLUMN
