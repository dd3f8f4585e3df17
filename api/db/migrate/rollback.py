"""``rollback_db``: undo applied migrations, newest first, under the same lock as ``migrate_db``.

Each migration is undone by its declared ``down(m)``, or else by replaying the inverse plan recorded
in its history row when it ran (:mod:`api.db.migrate.inverse`). Every step is checked for an inverse
before anything changes (:class:`IrreversibleMigration`). PostgreSQL and SQLite undo all of it in one
transaction; MySQL/MariaDB undo each migration under a ``rolling_back`` row, and a failure there is
resumed by the next call. An undone row keeps its history with status ``rolled_back``; the next
``migrate_db`` applies the migration again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peewee

from api.db.engines import engine_for
from api.db.error_handler import classify_error
from api.db.exceptions import (
    ConfigurationError,
    IrreversibleMigration,
    MigrationDeclarationError,
    MigrationError,
    MigrationLockLost,
)
from api.db.migrate.declarations import Migration, MigrationLike, _takes_migrator, plan_migrations
from api.db.migrate.inverse import irreversible_step, replay
from api.db.migrate.lock import migration_lock
from api.db.migrate.migrator import Migrator, OperationFailed, keeping_error, make_schema_migrator
from api.db.migrate.runner import LockHandle, SessionLock, refuse_read_only, using_connection
from api.db.migrate.tracker import ROLLED_BACK, ROLLING_BACK, HistoryRow, MigrationTracker
from api.db.pool.failover import pinned_session
from api.db.pool.routing import pinned_to_primary
from api.db.tracing import lock_span, traced

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RollbackStep:
    """One migration to undo: its declaration, its history row, and the function that undoes it."""

    migration: Migration
    row: HistoryRow
    down: Callable[..., Any]
    derived: bool  # True: replays the recorded inverse plan; False: the declared down(m)

    @property
    def name(self) -> str:
        return self.migration.name

    def as_migration(self) -> Migration:
        """The undo as a Migration record (for previews and ``sql --down``)."""
        m = self.migration
        return Migration(m.name, self.down, atomic=m.atomic, lock_timeout=m.lock_timeout,
                         lock_retries=m.lock_retries)  # fmt: skip


@dataclass
class RollbackReport:
    """What ``rollback_db`` undid, newest first."""

    engine: str
    rolled_back: list[str] = field(default_factory=list)
    operations: dict[str, int] = field(default_factory=dict)
    duration_ms: float = 0.0

    def summary(self) -> str:
        names = ", ".join(self.rolled_back) or "nothing"
        return (
            f"{self.engine}: rolled back {len(self.rolled_back)} migration(s) "
            f"({names}) in {self.duration_ms:.1f} ms"
        )

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine, "rolled_back": list(self.rolled_back),
                "operations": dict(self.operations),
                "duration_ms": round(self.duration_ms, 3)}  # fmt: skip


def _check_choice(names: Sequence[str], to: str | None, steps: int | None) -> None:
    """Exactly one of ``to`` (a declared name) and ``steps`` (a positive count)."""
    if (to is None) == (steps is None):
        raise ConfigurationError("rollback needs exactly one of to=NAME (keep NAME applied) or steps=N")
    if to is not None and to not in names:
        raise MigrationDeclarationError(f"rollback target {to!r} is not a declared migration")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ConfigurationError(f"steps must be a positive number of migrations, got {steps!r}")


def down_for(migration: Migration, row: HistoryRow) -> RollbackStep:
    """How ``migration`` is undone; IrreversibleMigration when it cannot be, naming the operation."""
    if migration.down is not None:
        return RollbackStep(migration, row, migration.down, False)
    plan = row.inverse
    operation = "its whole run (no inverse was recorded: applied by an older release or mark-applied)"
    if plan is not None:
        step = irreversible_step(plan)
        if step is None:
            return RollbackStep(migration, row, replay(plan), True)
        operation = step
    raise IrreversibleMigration(
        f"migration {migration.name!r} cannot be rolled back: {operation} has no safe inverse; nothing was "
        "changed. Give it a down(m) (Migration(name, up, down)), or roll forward with a new migration",
        migration=migration.name,
        operation=operation,
    )


def rollback_steps(
    planned: Sequence[Migration], history: dict[str, HistoryRow], *, to: str | None, steps: int | None
) -> list[RollbackStep]:
    """The applied migrations to undo, newest first, each with its way back (raises before any change)."""
    names = [m.name for m in planned]
    _check_choice(names, to, steps)
    applied = [m for m in planned if m.name in history and history[m.name].is_applied]
    if to is not None:
        keep = names.index(to)
        chosen = [m for m in applied if names.index(m.name) > keep]
    else:
        chosen = applied[-int(steps or 0):]
    return [down_for(m, history[m.name]) for m in reversed(chosen)]


def plan_rollback(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    to: str | None = None,
    steps: int | None = None,
) -> list[RollbackStep]:
    """What ``rollback_db`` would undo now, newest first; reads the history, changes nothing."""
    planned = plan_migrations(migrations)
    with using_connection(db):
        history = MigrationTracker(db).history_by_name()
    return rollback_steps(planned, history, to=to, steps=steps)


class _Rollback:
    """One locked rollback pass."""

    def __init__(self, db: peewee.Database, tracker: MigrationTracker, lock: LockHandle,
                 report: RollbackReport) -> None:  # fmt: skip
        self.db = db
        self.tracker = tracker
        self.lock = lock
        self.report = report
        self.engine = tracker.db_type

    def write(
        self, name: str, status: str, error: str | None, duration_ms: float | None, completed: int
    ) -> None:
        self.tracker.record_migration(name, status, error, duration_ms, completed=completed,
                                      owner=self.lock.owner,
                                      fence=self.lock.fence)  # fmt: skip

    def undo(self, step: RollbackStep, *, progress: bool) -> float:
        """Run the way back of one migration; its duration in ms. Raises MigrationError."""
        row = step.row
        resume = (
            int(row.completed_operations or 0)
            if progress and not step.derived and row.status == ROLLING_BACK
            else 0
        )
        on_progress = None
        if progress:

            def on_progress(completed: list[str]) -> None:
                self.tracker.update_progress(step.name, len(completed), fence=self.lock.fence)

        migration = step.migration
        m = Migrator(self.db, make_schema_migrator(self.db, lock_timeout=migration.lock_timeout,
                                                   retries=migration.lock_retries),
                     migration=step.name, resume_after=resume, on_progress=on_progress)  # fmt: skip
        started = time.perf_counter()
        try:
            with m._unit():
                step.down(m) if _takes_migrator(step.down) else step.down()
        except (MigrationLockLost, MigrationError):
            raise
        except OperationFailed as failure:
            raise self._error(step, failure.operation, failure.info, failure.statement, progress) from failure
        except Exception as exc:  # the declared down itself failed: classify like an operation
            raise self._error(step, "the down function", classify_error(exc, self.engine), m.log.last,
                              progress) from exc  # fmt: skip
        self.report.operations[step.name] = len(m.completed)
        return (time.perf_counter() - started) * 1000

    def _error(self, step: RollbackStep, operation: str, info: Any, statement: str | None,
               progress: bool) -> MigrationError:  # fmt: skip
        where = f"; statement: {statement}" if statement else ""
        if progress:
            advice = ("MySQL/MariaDB cannot roll DDL back: what was undone stays undone and the row stays "
                      "rolling_back; fix the cause and call rollback_db() again, "
                      "it resumes there")  # fmt: skip
            self.write(step.name, ROLLING_BACK, f"rollback failed: {info.message}", None,
                       self.report.operations.get(step.name, 0))  # fmt: skip
        else:
            advice = "nothing was rolled back (one transaction); fix the cause and try again"
        logger.error(
            "rollback of %s failed at %s: %s: %s", step.name, operation, info.category.value, info.message
        )
        return MigrationError(
            f"rollback of migration {step.name!r} failed at {operation}: {info.category.value}: "
            f"{info.message}{where}; {advice}",
            migration=step.name, category=info.category.value, statement=statement, orig=info.orig,
        )  # fmt: skip

    def done(self, step: RollbackStep, duration: float) -> None:
        how = "recorded inverse" if step.derived else "declared down"
        self.write(
            step.name, ROLLED_BACK, f"rolled back ({how})", duration, self.report.operations[step.name]
        )
        self.report.rolled_back.append(step.name)
        logger.info("migration %s rolled back in %.1f ms (%s)", step.name, duration, how)

    def run(self, steps: Sequence[RollbackStep]) -> None:
        """All in one transaction where DDL rolls back; otherwise one by one, resumably."""
        self.tracker.forget_digests()
        if engine_for(self.db).transactional_ddl():
            with keeping_error(self.db.atomic(), self.engine):
                for step in steps:
                    self.lock.check()
                    self.done(step, self.undo(step, progress=False))
            return
        for step in steps:
            self.lock.check()
            self.write(step.name, ROLLING_BACK, None, None, 0)
            self.done(step, self.undo(step, progress=True))


@traced("rollback_db", operation="rollback")
def rollback_db(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    to: str | None = None,
    steps: int | None = None,
    lock_timeout: float = 300.0,
) -> RollbackReport:
    """Undo the applied migrations after ``to`` (kept applied), or the last ``steps`` ones, newest first.

    Raises :class:`MigrationDeclarationError` / :class:`ConfigurationError` (nothing touched),
    :class:`IrreversibleMigration` (a migration on the way has no inverse; nothing changed),
    :class:`MigrationLockTimeout`, or :class:`MigrationError` naming the migration and statement.
    """
    started = time.perf_counter()
    planned = plan_migrations(migrations)
    _check_choice([m.name for m in planned], to, steps)
    tracker = MigrationTracker(db)
    report = RollbackReport(engine=tracker.db_type)
    with pinned_to_primary(db), pinned_session(db), using_connection(db):
        refuse_read_only(db)
        with lock_span(db, migration_lock(db, timeout=lock_timeout)) as held:
            lock: LockHandle = held or SessionLock(db)
            tracker.init_tracking_table()
            chosen = rollback_steps(planned, tracker.history_by_name(), to=to, steps=steps)
            if chosen:
                _Rollback(db, tracker, lock, report).run(chosen)
    report.duration_ms = (time.perf_counter() - started) * 1000
    logger.info("%s", report.summary())
    return report


__all__ = ["RollbackReport", "RollbackStep", "plan_rollback", "rollback_db", "rollback_steps"]
