"""Progress as data, the lock handle and the transaction-boundary rule, without a database."""

from __future__ import annotations

from typing import Any

import peewee
import pytest

from api.db.migrate.declarations import Migration
from api.db.migrate.runner import SessionLock, _owner_gone, _resume_point
from api.db.migrate.sqltext import is_transaction_boundary, is_transaction_control
from api.db.migrate.tracker import HistoryRow


def row(status: str, *, completed: int | None, owner: str | None = None, error: str | None = None,
        checksum: str | None = None) -> HistoryRow:  # fmt: skip
    return HistoryRow("m", status, None, error, None, "mysql", checksum, "host:1", completed, owner, None)


MIGRATION = Migration("m", lambda m: None)


def test_resume_point_is_the_recorded_count_never_the_message() -> None:
    assert _resume_point(row("failed", completed=3), MIGRATION) == 3
    assert _resume_point(row("running", completed=2), MIGRATION) == 2
    prose = row("failed", completed=None, error="completed operations (5): a | b")
    assert _resume_point(prose, MIGRATION) == 0
    assert _resume_point(row("success", completed=4), MIGRATION) == 0
    assert _resume_point(None, MIGRATION) == 0
    assert _resume_point(row("failed", completed=3, checksum="0" * 64), MIGRATION) == 0  # the body changed


class Lease:
    """A lock handle as the lease strategy gives it."""

    strategy = "lease"
    owner = "token-ours"
    fence: Any = None

    def check(self) -> None:
        """Always ours."""


class Advisory(Lease):
    strategy = "advisory"
    owner = "session:42"


def test_a_running_row_is_resumed_only_when_its_owner_cannot_hold_the_lock() -> None:
    assert _owner_gone(row("running", completed=1, owner="token-theirs"), Lease())
    assert not _owner_gone(row("running", completed=1, owner="token-ours"), Lease())
    assert _owner_gone(row("running", completed=1, owner="session:42"), Advisory())  # a reused session id


def test_session_lock_is_lost_with_its_session() -> None:
    db = peewee.SqliteDatabase(":memory:")
    with db.connection_context():
        lock = SessionLock(db)
        assert lock.strategy == "advisory" and lock.owner.startswith("session:") and lock.fence is None
        lock.check()  # SQLite: the file lock lives as long as the process


@pytest.mark.parametrize(
    "sql",
    ["COMMIT", "commit;", "END", "END TRANSACTION", "ROLLBACK", "rollback work", "BEGIN", "BEGIN IMMEDIATE",
     "START TRANSACTION", "ABORT", "SET autocommit = 0", "SET SESSION autocommit=1", "set @@autocommit = 0",
     "-- note\nCOMMIT", "/* x */ ROLLBACK", "XA START 'x'", "PREPARE TRANSACTION 'x'"],
)  # fmt: skip
def test_transaction_boundaries(sql: str) -> None:
    assert is_transaction_boundary(sql) and is_transaction_control(sql)


@pytest.mark.parametrize(
    "sql",
    ["ROLLBACK TO SAVEPOINT s1", "SAVEPOINT s1", "RELEASE SAVEPOINT s1", "SET LOCAL lock_timeout = '5s'",
     "SELECT 1", "UPDATE t SET ended = 1", "ENDPOINT",
     "CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END",
     "DO $$ BEGIN NULL; END $$", "SET statement_timeout = 0"],
)  # fmt: skip
def test_not_transaction_boundaries(sql: str) -> None:
    assert not is_transaction_boundary(sql)


def test_transaction_guard_refuses_on_its_thread_only_and_leaves_nothing_behind(tmp_path: Any) -> None:
    import threading

    from api.db.migrate.migrator import TransactionControlRefused, TransactionGuard

    db = peewee.SqliteDatabase(str(tmp_path / "g.db"), check_same_thread=False)
    guard = TransactionGuard(db, "m")
    other: list[Any] = []
    with db.connection_context(), db.atomic():
        with guard.active():
            with pytest.raises(TransactionControlRefused, match="'COMMIT'"):
                db.execute_sql("COMMIT")
            with pytest.raises(TransactionControlRefused, match=r"db\.rollback\(\)"):
                db.rollback()
            db.execute_sql("SELECT 1")  # anything else passes
            thread = threading.Thread(target=lambda: other.append(db.execute_sql("BEGIN") and db.rollback()))
            thread.start()
            thread.join()
        assert db.in_transaction() and guard.refused is not None
    assert other and not {"execute_sql", "begin", "commit", "rollback"} & set(vars(db))
