"""Named migrations and ``migrate_db``: apply each declared migration exactly once, at boot.

The flow of :func:`migrate_db`:

1. Validate the whole list (names, callables) before touching the database.
2. Fast path: one query compares a digest of the declared names
   with the digests recorded after earlier complete runs. Nothing pending: done,
   without the lock.
3. Otherwise take the migration lock (:mod:`api.db.migrate.lock`), read the history again
   under it, and apply what is pending:

   * PostgreSQL and SQLite (transactional DDL): all pending migrations and their
     history rows in one transaction (``atomic="all"``) or one per migration
     (``atomic="each"``); each operation inside a SAVEPOINT so that an expected
     "already there" error does not abort the transaction.
   * MySQL/MariaDB (no transactional DDL), and any ``Migration(atomic=False)``:
     a ``running`` row, then the operations one by one (``completed_operations``
     written after each, outside any transaction), then ``success``. A failure leaves
     a ``failed`` row with that count; the next run resumes after those operations.

Before locking, a target that refuses writes (a standby, a read-only setting or file) raises
:class:`ReadOnlyDatabase`. Under the lock, ``lock.check()`` runs before each migration, and
history writes carry the lock's owner and fence; a lost connection is a ``connection_lost``
:class:`MigrationError`, with history written on a fresh connection only while the lock is ours.

Declarations live in :mod:`api.db.migrate.declarations`, checksums in :mod:`api.db.migrate.checksums`,
the migrator ``m`` in :mod:`api.db.migrate.migrator`, the read paths (status, validate, repair) in
:mod:`api.db.migrate.status`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import peewee

from api.db.engines import engine_for
from api.db.error_handler import ErrorCategory, classify_error
from api.db.exceptions import (
    ConfigurationError,
    MigrationDeclarationError,
    MigrationError,
    MigrationLockLost,
    ReadOnlyDatabase,
    UnsupportedCapability,
)
from api.db.migrate.declarations import (
    Migration,
    MigrationLike,
    _takes_migrator,
    migrations_digest,
    plan_migrations,
    quick_declaration,
)
from api.db.migrate.lock import lock_settings, migration_lock
from api.db.migrate.migrator import (
    Migrator,
    OperationFailed,
    TransactionControlRefused,
    TransactionGuard,
    keeping_error,
    make_schema_migrator,
)
from api.db.migrate.tracker import (
    APPLIED,
    FAILED,
    RUNNING,
    SKIPPED,
    SUCCESS,
    HistoryRow,
    MigrationTracker,
)
from api.db.migrate.txlog import logged_transaction
from api.db.pool.failover import pinned_session
from api.db.pool.routing import pinned_to_primary
from api.db.redact import redact_text
from api.db.schema.verify import verify_schema
from api.db.tracing import lock_span, migration_span, report_attributes, traced

logger = logging.getLogger(__name__)

ATOMIC_MODES = ("all", "each")
ON_UNKNOWN_MODES = ("warn", "error")


# -- reports ------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationOutcome:
    """How one migration ended in this run."""

    name: str
    status: str  # success, skipped, failed
    duration_ms: float
    reason: str | None = None
    operations: tuple[str, ...] = ()
    skipped_tables: tuple[str, ...] = ()  # existing tables m.create_tables left alone
    inverse: str | None = None  # JSON: the recorded inverse of each operation (the way back)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "duration_ms": round(self.duration_ms, 3),
            "reason": self.reason,
            "operations": list(self.operations),
            "skipped_tables": list(self.skipped_tables),
        }


@dataclass
class MigrationReport:
    """What ``migrate_db`` found and did."""

    engine: str
    declared: int
    pending_before: list[str] = field(default_factory=list)
    outcomes: list[MigrationOutcome] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    schema_differences: list[str] = field(default_factory=list)
    fast_path: bool = False  # answered "nothing pending" without taking the lock
    lock: str | None = None  # the lock strategy used: advisory or lease (None: no lock taken)
    lock_reason: str | None = None  # why: "session pinned", "wsrep_on=ON (Galera)", "requested"...
    duration_ms: float = 0.0

    def _names(self, status: str) -> list[str]:
        return [o.name for o in self.outcomes if o.status == status]

    @property
    def applied(self) -> list[str]:
        return self._names(SUCCESS)

    @property
    def skipped(self) -> list[str]:
        return self._names(SKIPPED)

    @property
    def failed(self) -> list[str]:
        return self._names(FAILED)

    @property
    def up_to_date(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        text = (
            f"{self.engine}: {self.declared} declared, {len(self.pending_before)} pending, "
            f"{len(self.applied)} applied, {len(self.skipped)} skipped, {len(self.failed)} failed "
            f"in {self.duration_ms:.1f} ms"
        )
        if self.fast_path:
            text += " (nothing pending, no lock taken)"
        if self.unknown:
            text += f"; {len(self.unknown)} recorded migration(s) not declared: {', '.join(self.unknown)}"
        if self.drift:
            text += f"; changed since applied: {', '.join(self.drift)}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "declared": self.declared,
            "pending_before": list(self.pending_before),
            "applied": self.applied,
            "skipped": self.skipped,
            "failed": self.failed,
            "outcomes": [o.to_dict() for o in self.outcomes],
            "unknown": list(self.unknown),
            "drift": list(self.drift),
            "schema_differences": list(self.schema_differences),
            "fast_path": self.fast_path,
            "lock": self.lock,
            "lock_reason": self.lock_reason,
            "duration_ms": round(self.duration_ms, 3),
        }


# -- migrate_db -----------------------------------------------------------------------


def _check_settings(lock_timeout: float, atomic: str, on_unknown: str) -> None:
    if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, (int, float)) or not lock_timeout > 0:
        raise ConfigurationError(f"lock_timeout must be a positive number of seconds, got {lock_timeout!r}")
    if atomic not in ATOMIC_MODES:
        raise ConfigurationError(
            f"atomic must be one of {', '.join(map(repr, ATOMIC_MODES))}, got {atomic!r}"
        )
    if on_unknown not in ON_UNKNOWN_MODES:
        raise ConfigurationError(
            f"on_unknown must be one of {', '.join(map(repr, ON_UNKNOWN_MODES))}, got {on_unknown!r}"
        )


@contextlib.contextmanager
def using_connection(db: peewee.Database) -> Iterator[None]:
    """Use this thread's connection for the whole run; return it to the pool only if opened here."""
    opened_here = db.is_closed()
    if opened_here:
        db.connect()
    try:
        yield
    finally:
        if opened_here and not db.is_closed():
            db.close()


# -- the held lock ---------------------------------------------------------------------


class LockHandle(Protocol):
    """What the runner needs of the held migration lock (the lock strategies provide it)."""

    strategy: str  # advisory, lease
    owner: str  # recorded in history rows: the lease token, or session:<backend id>

    @property
    def fence(self) -> peewee.ColumnBase | None:
        """A condition each history write needs (the lock still ours)."""

    def check(self) -> None:
        """Raise MigrationLockLost when the lock is no longer ours."""


class SessionLock:
    """Today's session lock (advisory lock, GET_LOCK, BEGIN IMMEDIATE): ours while its session lives."""

    def __init__(self, db: peewee.Database) -> None:
        self.strategy = "advisory"
        self.fence: peewee.ColumnBase | None = None  # the session itself is the fence
        self.engine = engine_for(db)
        self.conn = db.connection()
        self.owner = self.engine.session_id(self.conn)

    def check(self) -> None:
        if self.engine.session_closed(self.conn):
            raise MigrationLockLost(
                f"the session that held the migration lock ({self.owner}) is gone, and the lock with it; "
                "nothing more is written: the next booter takes over"
            )


def _owner_gone(row: HistoryRow, lock: LockHandle) -> bool:
    """Whether the writer of a ``running`` row provably no longer holds the lock, now that we hold it.

    A session lock is held by one live session, ours: whoever wrote the row is gone, even when the
    server reused its session id. A lease token is unique per acquisition: another token has expired.
    """
    return lock.strategy == "advisory" or row.owner != lock.owner


def _resume_point(row: HistoryRow | None, migration: Migration) -> int:
    """How many operations of ``migration`` a ``running`` / ``failed`` row records as done."""
    if row is None or row.status not in (RUNNING, FAILED) or not row.completed_operations:
        return 0
    if row.checksum and row.checksum != migration.checksum:
        logger.warning(
            "migration %s changed since its interrupted run; replaying all of its operations", migration.name
        )
        return 0
    return int(row.completed_operations)


def _resume_key(row: HistoryRow | None, migration: Migration) -> str | None:
    """The last key an interrupted backfill of ``migration`` committed (None: start it from the beginning)."""
    if row is None or row.status not in (RUNNING, FAILED) or row.progress_key is None:
        return None
    if row.checksum and row.checksum != migration.checksum:
        return None  # changed since: _resume_point replays everything
    return row.progress_key


class _Replay(Exception):
    """Internal: the fast way failed in ``migration``; the group is rolled back and run the careful way."""

    def __init__(self, migration: str, cause: BaseException | None) -> None:
        super().__init__(f"migration {migration}: {cause or 'an operation failed'}")


def _discard_connection(db: peewee.Database, engine: str) -> None:
    """Drop this thread's lost connection, never back into a pool; the next query opens a fresh one."""
    close = getattr(db, "manual_close", None) or db.close
    try:
        close()
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:  # it is lost already: nothing to undo
        logger.debug("closing the lost connection failed: %s", classify_error(exc, engine).message)


class _Run:
    """One locked pass over the pending migrations (state shared by the steps below)."""

    def __init__(
        self, db: peewee.Database, tracker: MigrationTracker, report: MigrationReport, lock: LockHandle
    ) -> None:
        self.db = db
        self.engine = tracker.db_type
        # Decided once per run, from the engine: does DDL roll back with its transaction here?
        self.transactional = engine_for(db).transactional_ddl()
        self.tracker = tracker
        self.report = report
        self.lock = lock
        # One lock-safe migrator for the run: the server's facts are read once, not per migration.
        self.ddl: Any = make_schema_migrator(db)
        self.unwritten: set[str] = set()  # migrations run without a history row yet (the first write inserts)

    def ddl_for(self, migration: Migration, *, direct: bool) -> Any:
        """The run's schema migrator, with ``migration``'s own lock bound where it declares one."""
        changes: dict[str, Any] = {}
        if migration.lock_timeout is not None:
            changes["lock_timeout"] = migration.lock_timeout
        if migration.lock_retries is not None:
            changes["retries"] = migration.lock_retries
        ddl = self.ddl.with_settings(**changes) if changes else self.ddl
        ddl.direct = direct
        return ddl

    def call(self, migration: Migration, m: Migrator) -> None:
        with migration_span(self.db, migration.name, m):
            if _takes_migrator(migration.fn):
                migration.fn(m)
            else:
                migration.fn()

    def write(self, migration: Migration, status: str, error: str | None, duration_ms: float | None,
              completed: int, inverse: str | None = None) -> None:  # fmt: skip
        """The history row of ``migration``, with the lock's owner and fence."""
        self.tracker.record_migration(
            migration.name, status, error, duration_ms, checksum=migration.checksum, completed=completed,
            owner=self.lock.owner, fence=self.lock.fence, inverse=inverse,
        )  # fmt: skip

    def progress_write(self, migration: Migration, completed: int, inverse: str | None,
                       key: str | None = None) -> None:  # fmt: skip
        """One statement: the first inserts the ``running`` row, the next ones update its progress."""
        if migration.name in self.unwritten and key is None:
            self.unwritten.discard(migration.name)
            self.write(migration, RUNNING, None, None, completed, inverse)
            return
        if migration.name in self.unwritten:  # a backfill's first batch: the row first
            self.unwritten.discard(migration.name)
            self.write(migration, RUNNING, None, None, completed, inverse)
        self.tracker.update_progress(migration.name, completed, key=key, fence=self.lock.fence,
                                     inverse=inverse)  # fmt: skip

    def migrator(
        self, migration: Migration, resume_after: int, progress: bool, resume_key: str | None = None,
        seed: Any = None, fast: bool = False,
    ) -> Migrator:
        """The ``m`` of ``migration``; with ``progress``, each operation's completion is recorded."""
        on_progress = on_batch = None
        if progress:

            def on_progress(completed: list[str]) -> None:
                self.progress_write(migration, len(completed), m.inverse.to_json(len(completed)))

            def on_batch(completed: int, key: str) -> None:  # inside the batch's transaction
                self.progress_write(migration, completed, m.inverse.to_json(completed), key)

        m = Migrator(
            self.db,
            self.ddl_for(migration, direct=fast),
            migration=migration.name,
            resume_after=resume_after,
            on_progress=on_progress,
            atomic=migration.atomic,
            resume_key=resume_key,
            on_batch=on_batch,
            inverse_seed=seed,
            fast=fast,
        )
        return m

    def call_guarded(self, migration: Migration, m: Migrator, *, in_transaction: bool) -> None:
        """Run the function; inside a transaction, refuse what would end it; classify what it raises."""
        guard = TransactionGuard(self.db, migration.name)
        try:
            with guard.active() if in_transaction else contextlib.nullcontext():
                self.call(migration, m)
        except (OperationFailed, UnsupportedCapability, MigrationLockLost):
            raise
        except TransactionControlRefused as refused:
            raise OperationFailed("transaction control", refused.info(), refused.statement) from refused
        except Exception as exc:  # the function itself failed: classify like an operation
            info = classify_error(exc, self.engine)
            raise OperationFailed("the migration function", info, m.log.last) from exc
        caught = guard.refused
        if caught is not None:  # the function caught the refusal and went on: still refused
            raise OperationFailed("transaction control", caught.info(), caught.statement) from caught

    def apply(self, migration: Migration, resume_after: int = 0, progress: bool = False,
              resume_key: str | None = None, seed: Any = None) -> MigrationOutcome:  # fmt: skip
        """Run one migration's function; return its outcome or raise OperationFailed.

        In a transaction (not ``progress``) the whole function runs in a savepoint, so that a
        capability skip rolls back what it did; outside one, what completed stays applied.
        """
        m = self.migrator(migration, resume_after, progress, resume_key, seed)
        in_transaction = not progress and self.db.in_transaction()
        started = time.perf_counter()
        try:
            with m._unit() if in_transaction else contextlib.nullcontext():
                self.call_guarded(migration, m, in_transaction=in_transaction)
        except UnsupportedCapability as exc:
            duration = (time.perf_counter() - started) * 1000
            logger.info("migration %s skipped in %.1f ms: %s", migration.name, duration, exc, extra={
                "event": "skipped", "migration": migration.name, "status": SKIPPED,
                "duration_ms": round(duration, 3),
                "operations": len(m.completed), "engine": self.engine, "reason": str(exc),
            })  # fmt: skip
            return MigrationOutcome(migration.name, SKIPPED, duration, str(exc), tuple(m.completed),
                                    inverse=m.inverse.to_json(len(m.completed)))  # fmt: skip
        except OperationFailed as failure:
            failure.completed = tuple(m.completed)  # type: ignore[attr-defined]
            failure.duration_ms = (time.perf_counter() - started) * 1000  # type: ignore[attr-defined]
            raise
        return self._finished(migration, m, started)

    def apply_fast(self, migration: Migration) -> MigrationOutcome:
        """Run one migration in the group's transaction, no savepoint of its own; raise _Replay on failure.

        The group is then rolled back and run again the careful way (:meth:`apply`), which decides
        adoption, retries lock timeouts and names the failing statement exactly as before.
        """
        m = self.migrator(migration, 0, False, fast=True)
        started = time.perf_counter()
        try:
            self.call_guarded(migration, m, in_transaction=True)
        except UnsupportedCapability as exc:
            raise _Replay(migration.name, exc) from exc
        except OperationFailed as failure:
            if failure.info.category == ErrorCategory.CONNECTION_LOST:  # nothing to replay on
                failure.completed = tuple(m.completed)  # type: ignore[attr-defined]
                failure.duration_ms = (time.perf_counter() - started) * 1000  # type: ignore[attr-defined]
                raise
            raise _Replay(migration.name, failure) from failure
        if m.replay:  # an operation failed and the function went on: its unit may be broken
            raise _Replay(migration.name, None)
        return self._finished(migration, m, started)

    def _finished(self, migration: Migration, m: Migrator, started: float) -> MigrationOutcome:
        """The outcome of ``migration``, whose function returned, logged."""
        duration = (time.perf_counter() - started) * 1000
        if m.already and not m.executed and m.resume_after == 0:
            status, reason = SKIPPED, "every operation was already in effect (adopted)"
        else:
            status, reason = SUCCESS, None
        logger.info(
            "migration %s %s in %.1f ms (%d operation(s))",
            migration.name,
            "applied" if status == SUCCESS else "skipped, already in effect",
            duration,
            len(m.completed),
            extra={
                "event": "applied" if status == SUCCESS else "skipped", "migration": migration.name,
                "status": status,
                "duration_ms": round(duration, 3), "operations": len(m.completed), "engine": self.engine,
            },
        )  # fmt: skip
        return MigrationOutcome(
            migration.name, status, duration, reason, tuple(m.completed), tuple(m.skipped_tables),
            m.inverse.to_json(len(m.completed)),
        )

    def record(self, migration: Migration, outcome: MigrationOutcome) -> None:
        self.write(migration, outcome.status, outcome.reason, outcome.duration_ms, len(outcome.operations),
                   outcome.inverse)  # fmt: skip
        self.report.outcomes.append(outcome)

    def fail(self, migration: Migration, failure: OperationFailed, *, rolled_back: bool) -> MigrationError:
        """Record and log ``failure`` of ``migration``; return the error to raise."""
        info = failure.info
        completed: tuple[str, ...] = () if rolled_back else getattr(failure, "completed", ())
        duration = float(getattr(failure, "duration_ms", 0.0))
        statement = redact_text(failure.statement) if failure.statement else None
        text = f"{info.category.value}: {info.message}; operation: {failure.operation}"
        if statement:
            text += f"; statement: {statement}"
        lost = info.category == ErrorCategory.CONNECTION_LOST
        recorded = self._record_failure(migration, text, duration, len(completed), rolled_back=rolled_back,
                                        lost=lost)  # fmt: skip
        self.report.outcomes.append(MigrationOutcome(migration.name, FAILED, duration, text, completed))
        logger.error(
            "migration %s failed after %.1f ms (%s, code %s): %s; operation %s; statement: %s",
            migration.name, duration, info.category.value, info.code, info.message, failure.operation,
            statement or "n/a",
            extra={
                "event": "failed", "migration": migration.name, "status": FAILED,
                "duration_ms": round(duration, 3),
                "operations": len(completed), "engine": self.engine, "error_category": info.category.value,
            },
        )  # fmt: skip
        advice = self._advice(migration, completed, rolled_back)
        if not recorded:
            how = "the connection was lost, and the migration lock with it" if lost else "the lock was lost"
            advice += f"; {how}, so no history was written for it: the next migrate_db() takes over"
        return MigrationError(
            f"migration {migration.name!r} failed: {text}; {advice}",
            migration=migration.name,
            category=info.category.value,
            statement=statement,
            completed=completed,
            orig=info.orig,
        )

    def _record_failure(
        self, migration: Migration, text: str, duration: float, completed: int, *, rolled_back: bool,
        lost: bool,
    ) -> bool:  # fmt: skip
        """The ``failed`` history row, while the lock is ours; False when it was left to the next booter.

        After a rollback it needs a transaction of its own; after a lost connection, a fresh connection.
        """
        try:
            if lost:
                _discard_connection(self.db, self.engine)
            self.lock.check()
            with self.db.atomic() if rolled_back else contextlib.nullcontext():
                self.write(migration, FAILED, text, duration, completed)
        except MigrationLockLost as exc:
            logger.error("migration %s: not recorded as failed: %s", migration.name, exc)
            return False
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:  # the error raised says everything
            logger.error(
                "could not record migration %s as failed: %s",
                migration.name,
                classify_error(exc, self.engine).message,
            )
        return True

    def _advice(self, migration: Migration, completed: tuple[str, ...], rolled_back: bool) -> str:
        """What the operator should do now, and what stayed applied."""
        if rolled_back:
            return "nothing of it was applied (rolled back); fix it and boot again"
        if self.transactional:
            why = "it runs outside a transaction (atomic=False)"
        else:
            why = "MySQL/MariaDB cannot roll back DDL"
        left = ", ".join(completed) if completed else "no operation"
        advice = (
            f"{why}: {len(completed)} operation(s) stay applied ({left}); fix the cause and boot again, "
            "the next migrate_db() resumes after them (or see `python -m api.db repair`)"
        )
        logger.warning("migration %s failed and was not rolled back: %s", migration.name, advice,
                       extra={"event": "not_rolled_back", "migration": migration.name, "status": FAILED,
                              "operations": len(completed), "engine": self.engine})  # fmt: skip
        return advice

    def run_transactional(self, group: Sequence[Migration]) -> None:
        """Apply ``group`` in one transaction with its history rows; all or nothing.

        First the fast way (no savepoints, the lock bound set once); on any failure that transaction
        is rolled back and the group runs again the careful way, which reports as before.
        """
        try:
            self._run_group(group, fast=True)
        except _Replay as replay:
            logger.info("%s; the group of %d migration(s) is rolled back and run again step by step",
                        replay, len(group))  # fmt: skip
            self._run_group(group, fast=False)

    def _run_group(self, group: Sequence[Migration], *, fast: bool) -> None:
        """One transaction over ``group`` with its history rows."""
        current: Migration | None = None
        done: list[MigrationOutcome] = []
        try:
            with keeping_error(logged_transaction(self.db, engine_for(self.db).migration_transaction(),
                                                  migrations=[m.name for m in group]), self.engine), \
                    self.ddl.scope("transaction"):  # fmt: skip
                for migration in group:
                    current = migration
                    self.lock.check()
                    outcome = self.apply_fast(migration) if fast else self.apply(migration)
                    self.write(migration, outcome.status, outcome.reason, outcome.duration_ms,
                               len(outcome.operations), outcome.inverse)  # fmt: skip
                    done.append(outcome)
        except (peewee.DatabaseError, peewee.InterfaceError) as exc:  # a history write or the COMMIT failed
            info = classify_error(exc, self.engine)
            if fast and info.category != ErrorCategory.CONNECTION_LOST:
                raise _Replay((current or group[0]).name, exc) from exc
            failure = OperationFailed("history write or COMMIT", info, None)
            raise self.fail(current or group[0], failure, rolled_back=True) from exc
        except OperationFailed as failure:
            assert current is not None
            if done:
                logger.error(
                    "rolled back %d migration(s) applied earlier in the same transaction: %s",
                    len(done),
                    ", ".join(o.name for o in done),
                )
            raise self.fail(current, failure, rolled_back=True) from failure.info.orig
        self.report.outcomes.extend(done)

    def run_non_transactional(self, migration: Migration, row: HistoryRow | None) -> None:
        """running row, operations (progress after each), then success; resumable after a failure."""
        self.lock.check()
        if row is not None and row.status == RUNNING and not _owner_gone(row, self.lock):
            raise MigrationError(
                f"migration {migration.name!r} has a running row written by {row.owner} at "
                f"{row.progress_at}, which may still hold the lock: not resumed; boot again once that run "
                "has ended",
                migration=migration.name,
                category="running_elsewhere",
            )
        resume_after = _resume_point(row, migration)
        if row is not None and row.status in (RUNNING, FAILED):
            logger.warning(
                "resuming migration %s, left %s by %s (%s) at %s; %d operation(s) completed then",
                migration.name, row.status, row.installed_by, row.owner, row.progress_at or row.applied_at,
                resume_after,
            )  # fmt: skip
        if row is None:  # nothing to take over: the first progress write inserts the running row
            self.unwritten.add(migration.name)
        else:
            self.write(migration, RUNNING, None, None, resume_after)
        try:
            seed = row.inverse if row is not None and resume_after else None
            outcome = self.apply(migration, resume_after=resume_after, progress=True,
                                 resume_key=_resume_key(row, migration), seed=seed)  # fmt: skip
        except OperationFailed as failure:
            raise self.fail(migration, failure, rolled_back=False) from failure.info.orig
        self.record(migration, outcome)


def _groups(pending: Sequence[Migration], atomic: str) -> list[list[Migration]]:
    """Transactional engines: consecutive atomic migrations share a transaction under ``atomic="all"``."""
    groups: list[list[Migration]] = []
    for migration in pending:
        joinable = atomic == "all" and migration.atomic and groups and groups[-1][-1].atomic
        if joinable:
            groups[-1].append(migration)
        else:
            groups.append([migration])
    return groups


def verify_models(db: peewee.Database, models: Sequence[type[peewee.Model]]) -> list[str]:
    """The differences between ``models`` and ``db`` that may break the app (``migrate_db(verify=...)``)."""
    return [str(d) for d in verify_schema(db, models).differences if d.severity == "error"]


@traced("migrate_db", operation="migrate", result=report_attributes)
def migrate_db(
    db: peewee.Database,
    migrations: Iterable[MigrationLike],
    *,
    lock_timeout: float = 300.0,
    atomic: str = "all",
    on_unknown: str = "warn",
    verify: Sequence[type[peewee.Model]] | None = None,
    target: str | None = None,
    lock: str | None = None,
    lease_ttl: float | None = None,
) -> MigrationReport:
    """Apply every pending migration of ``migrations`` to ``db`` exactly once; return what happened.

    ``target``: apply only up to and including the migration of that name (an unknown name is a
    :class:`MigrationDeclarationError`).

    ``lock_timeout``: seconds to wait for another instance's run. ``atomic``: ``"all"``
    (one transaction for all pending migrations, on engines with transactional DDL) or
    ``"each"`` (one per migration). ``on_unknown``: ``"warn"`` or ``"error"`` when the
    history names migrations the code does not declare. ``verify``: models whose tables
    and columns must exist afterwards (differences logged and reported). ``lock``: ``"auto"``
    (default; env ``API_DB_MIGRATION_LOCK``), ``"advisory"`` or ``"lease"``; ``lease_ttl``: the
    lease expiry in seconds (env ``API_DB_LEASE_TTL``, 30): see docs/DATABASE_MIGRATIONS.md, Topologies.

    Raises :class:`MigrationDeclarationError` (nothing touched), :class:`ReadOnlyDatabase` (a
    migration is pending but the target refuses writes; nothing touched), :class:`MigrationLockTimeout`,
    :class:`MigrationLockLost`, or :class:`MigrationError` naming the migration, the error category
    and the statement.
    """
    started = time.perf_counter()
    _check_settings(lock_timeout, atomic, on_unknown)
    strategy, ttl = lock_settings(lock, lease_ttl)
    if isinstance(migrations, (str, bytes, dict)) or not isinstance(migrations, Iterable):
        plan_migrations(migrations)  # raises the explanatory error
    items = list(migrations)
    quick = quick_declaration(items)
    if quick is None:
        names = [m.name for m in plan_migrations(items)]  # raises MigrationDeclarationError
        digest = migrations_digest(names)
    else:
        names, digest = quick
    tracker = MigrationTracker(db)
    report = MigrationReport(engine=tracker.db_type, declared=len(names))
    last = target_index(names, target)
    try:
        # Replicas may lag: migrations read the primary; its session holds the lock: never swapped silently.
        with pinned_to_primary(db), pinned_session(db), using_connection(db):
            if tracker.is_up_to_date(digest, len(names)):
                report.fast_path = True
                logger.debug("no pending migration (%d declared, digest %s)", len(names), digest[:12])
            else:
                planned = plan_migrations(items)
                refuse_read_only(db)
                lock_cm = migration_lock(db, timeout=lock_timeout, lock=strategy, lease_ttl=ttl)
                with lock_span(db, lock_cm) as held:
                    handle: LockHandle = held or SessionLock(db)  # a strategy's handle, else the session's
                    report.lock, report.lock_reason, tracker.lock = held.strategy, held.reason, held
                    _migrate_locked(
                        db, tracker, planned, digest, report, lock=handle, atomic=atomic,
                        on_unknown=on_unknown, last=last,
                    )
            if verify is not None:
                report.schema_differences = verify_models(db, verify)  # each logged by verify_schema
    finally:
        report.duration_ms = (time.perf_counter() - started) * 1000
    if report.pending_before:
        logger.info("%s", report.summary(), extra={
            "event": "run", "engine": report.engine, "duration_ms": round(report.duration_ms, 3),
            "status": FAILED if report.failed else SUCCESS, "migrations": report.applied,
        })  # fmt: skip
    return report


def target_index(names: Sequence[str], target: str | None) -> int:
    """The position of ``target`` in ``names`` (the last one when None); unknown: a declaration error."""
    if target is None:
        return len(names) - 1
    if target not in names:
        raise MigrationDeclarationError(
            f"target migration {target!r} is not declared; declared: {', '.join(names[-5:]) or 'none'}"
            f"{' (last five)' if len(names) > 5 else ''}"
        )
    return list(names).index(target)


def refuse_read_only(db: peewee.Database) -> None:
    """Raise ReadOnlyDatabase when ``db`` refuses writes (asked before locking: one round trip)."""
    engine = engine_for(db)
    reason = engine.read_only_reason()
    if reason is None:
        return
    raise ReadOnlyDatabase(
        f"migrations are pending but this {engine.name} database refuses writes: {reason}; nothing was "
        f"changed and no lock was taken. Migrate through a writable target: {engine.read_only_advice}",
        reason=reason,
    )


def _migrate_locked(
    db: peewee.Database,
    tracker: MigrationTracker,
    planned: Sequence[Migration],
    digest: str,
    report: MigrationReport,
    *,
    lock: LockHandle,
    atomic: str,
    on_unknown: str,
    last: int | None = None,
) -> None:
    tracker.init_tracking_table()
    history = tracker.history_by_name()
    _check_unknown(history, planned, report, on_unknown)
    _check_drift(history, planned, report)
    pending = [m for m in planned if not (m.name in history and history[m.name].status in APPLIED)]
    report.pending_before = [m.name for m in pending]
    reached = planned[: len(planned) if last is None else last + 1]
    pending = [m for m in pending if m in reached]
    if pending:
        logger.info("%d pending migration(s): %s", len(pending), ", ".join(m.name for m in pending),
                    extra={"event": "pending", "migrations": [m.name for m in pending],
                           "engine": report.engine})
        _apply_pending(_Run(db, tracker, report, lock), pending, history, atomic)
    if not report.unknown and len(pending) == len(report.pending_before):
        tracker.record_digest(digest)


def _check_unknown(
    history: dict[str, HistoryRow], planned: Sequence[Migration], report: MigrationReport, on_unknown: str
) -> None:
    """History rows the code does not declare: a warning, or an error with ``on_unknown="error"``."""
    declared = {m.name for m in planned}
    report.unknown = [name for name in history if name not in declared]
    if not report.unknown:
        return
    text = (
        f"migration_history names {len(report.unknown)} migration(s) this code does not declare: "
        f"{', '.join(report.unknown)} (a newer release migrated this database?)"
    )
    if on_unknown == "error":
        raise MigrationError(f"{text}; refusing to start (on_unknown='error')", category="unknown_migrations")
    logger.warning("%s", text)


def _check_drift(
    history: dict[str, HistoryRow], planned: Sequence[Migration], report: MigrationReport
) -> None:
    """Applied migrations whose definition changed since: reported and logged, never re-run."""
    for migration in planned:
        row = history.get(migration.name)
        if row is not None and row.is_applied and row.checksum and row.checksum != migration.checksum:
            report.drift.append(migration.name)
    if report.drift:
        logger.warning(
            "migration(s) changed since they were applied (they are not re-run): %s; "
            "see `python -m api.db validate`",
            ", ".join(report.drift),
        )


def _apply_pending(
    run: _Run, pending: Sequence[Migration], history: dict[str, HistoryRow], atomic: str
) -> None:
    """Transactional engines: groups in transactions; otherwise each migration resumably on its own."""
    with run.ddl.scope("session"):  # the lock bound of the run's connection, set once and restored once
        _apply_groups(run, pending, history, atomic)


def _apply_groups(
    run: _Run, pending: Sequence[Migration], history: dict[str, HistoryRow], atomic: str
) -> None:
    if not run.transactional:
        for migration in pending:
            run.run_non_transactional(migration, history.get(migration.name))
        return
    for group in _groups(pending, atomic):
        if len(group) == 1 and not group[0].atomic:
            run.run_non_transactional(group[0], history.get(group[0].name))
        else:
            run.run_transactional(group)
