"""MigrationTracker: the ``migration_history`` table, and the one-row digest behind fast no-op boots.

Invariant: a ``migration_history`` row whose status is ``success`` or ``skipped``
means the migration is applied. ``running`` is left by a process that died (or is
still working, which only the lock can tell), ``failed`` by a migration that raised.

Read paths (:meth:`MigrationTracker.get_migration_history`, :meth:`has_migration_run`,
:meth:`is_up_to_date`) never create a table: on a database that has none they answer
"nothing applied". Only :meth:`init_tracking_table` creates, with ``IF NOT EXISTS``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import peewee

from api.db.engines import engine_for
from api.db.error_handler import ALREADY_ABSENT, ALREADY_PRESENT, classify_error
from api.db.exceptions import MigrationLockLost
from api.db.migrate.tables import create_tables_race_free
from api.db.redact import redact_text

logger = logging.getLogger(__name__)

HISTORY_TABLE = "migration_history"
STATE_TABLE = "migration_state"
NAME_MAX_LENGTH = 255
ERROR_MAX_LENGTH = 4000
OWNER_MAX_LENGTH = 64

SUCCESS = "success"
SKIPPED = "skipped"
FAILED = "failed"
RUNNING = "running"
ROLLED_BACK = "rolled_back"  # undone by rollback_db: pending again, its history kept
ROLLING_BACK = "rolling_back"  # a rollback in progress (MySQL/MariaDB): still applied until it completes
STATUSES = (RUNNING, SUCCESS, FAILED, SKIPPED, ROLLED_BACK, ROLLING_BACK)
APPLIED = frozenset({SUCCESS, SKIPPED, ROLLING_BACK})

F = TypeVar("F", bound=Callable[..., Any])


def installed_by() -> str:
    """``host:pid`` of this process, as recorded in each history row."""
    return f"{socket.gethostname()}:{os.getpid()}"[:255]


PROGRESS_COLUMNS = ("completed_operations", "owner", "progress_at", "progress_key", "inverse_plan")


def _lock_lost(name: str) -> MigrationLockLost:
    return MigrationLockLost(
        f"the migration lock is no longer ours: history of {name} not written; the next booter takes over "
        "(check that lock_timeout / the lease expiry fits the migration's pauses)"
    )


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class HistoryRow:
    """One row of ``migration_history``, detached from the database."""

    migration_name: str
    status: str
    applied_at: datetime.datetime | None
    error_message: str | None
    duration_ms: float | None
    db_type: str | None
    checksum: str | None
    installed_by: str | None
    completed_operations: int | None = None  # operations in effect (the resume point of running/failed)
    owner: str | None = None  # the lock holder that wrote the row (lease token or session:<id>)
    progress_at: datetime.datetime | None = None  # when that holder last made progress
    # JSON of the last primary key a running backfill finished (its resume point)
    progress_key: str | None = None
    inverse_plan: str | None = None  # JSON: the inverse of each operation, recorded as it ran

    @property
    def inverse(self) -> list[dict[str, Any]] | None:
        """The recorded inverse plan (one entry per operation), None when none was recorded."""
        return None if not self.inverse_plan else list(json.loads(self.inverse_plan))

    @property
    def is_applied(self) -> bool:
        return self.status in APPLIED

    def to_dict(self) -> dict[str, Any]:
        return {
            "migration_name": self.migration_name,
            "status": self.status,
            "applied_at": self.applied_at.isoformat(sep=" ") if self.applied_at else None,
            "error_message": self.error_message,
            "duration_ms": self.duration_ms,
            "db_type": self.db_type,
            "checksum": self.checksum,
            "installed_by": self.installed_by,
            "completed_operations": self.completed_operations,
            "owner": self.owner,
            "progress_at": self.progress_at.isoformat(sep=" ") if self.progress_at else None,
            "progress_key": self.progress_key,
            "inverse_plan": self.inverse,
        }


def _models(database: peewee.Database) -> tuple[Any, Any]:
    class MigrationHistory(peewee.Model):
        id = peewee.AutoField()
        migration_name = peewee.CharField(max_length=NAME_MAX_LENGTH, unique=True)
        applied_at = peewee.DateTimeField(default=_utcnow)
        status = peewee.CharField(max_length=16)
        error_message = peewee.TextField(null=True)
        duration_ms = peewee.FloatField(null=True)
        db_type = peewee.CharField(max_length=16, null=True)
        checksum = peewee.CharField(max_length=64, null=True)
        installed_by = peewee.CharField(max_length=255, null=True)
        # Progress as data (added to older tables by init_tracking_table).
        completed_operations = peewee.IntegerField(null=True)
        owner = peewee.CharField(max_length=OWNER_MAX_LENGTH, null=True)
        progress_at = peewee.DateTimeField(null=True)
        progress_key = peewee.TextField(null=True)  # a backfill's last key done, JSON
        inverse_plan = peewee.TextField(null=True)  # JSON list, one inverse per operation

        class Meta:
            table_name = HISTORY_TABLE
            indexes = ((("migration_name", "status"), False),)

    class MigrationState(peewee.Model):
        # One row per set of declared migrations found fully applied: the no-op boot
        # compares its digest with these rows in a single query.
        digest = peewee.CharField(max_length=64, primary_key=True)
        recorded_at = peewee.DateTimeField(default=_utcnow)

        class Meta:
            table_name = STATE_TABLE

    MigrationHistory.bind(database)
    MigrationState.bind(database)
    return MigrationHistory, MigrationState


class MigrationTracker:
    """Records which migrations ran, when, how long they took and how they ended."""

    def __init__(self, db: peewee.Database) -> None:
        self.db = db
        self.db_type = engine_for(db).name
        self._models: tuple[Any, Any] | None = None
        self._upsert_sql: dict[tuple[str, ...], str] = {}  # columns -> the rendered unfenced upsert
        # The migration lock held for this run (migrate/lock.py): each history write is fenced by it.
        self.lock: Any = None

    # The models are built on first use: the no-op boot needs only one raw query.
    @property
    def History(self) -> Any:  # noqa: N802 - a model class
        if self._models is None:
            self._models = _models(self.db)
        return self._models[0]

    @property
    def State(self) -> Any:  # noqa: N802 - a model class
        if self._models is None:
            self._models = _models(self.db)
        return self._models[1]

    # -- schema -------------------------------------------------------------

    def init_tracking_table(self) -> None:
        """Create ``migration_history`` and ``migration_state`` if they do not exist."""
        create_tables_race_free(self.db, [self.History, self.State])
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Add the progress columns to a table made by an older release (one catalog read when none lack)."""
        present = {c.name for c in self.db.get_columns(HISTORY_TABLE)}
        for column in PROGRESS_COLUMNS:
            if column not in present:
                self._add_column(column)

    def _add_column(self, column: str) -> None:
        """``ALTER TABLE ... ADD COLUMN``; another process adding it first is fine (the catalog says so)."""
        from playhouse.migrate import SchemaMigrator

        field = self.History._meta.fields[column]
        migrator = SchemaMigrator.from_database(self.db)
        try:
            with self.db.savepoint() if self.db.in_transaction() else contextlib.nullcontext():
                migrator.add_column(HISTORY_TABLE, column, field).run()
        except peewee.DatabaseError as exc:
            info = classify_error(exc, self.db_type)
            present = {c.name for c in self.db.get_columns(HISTORY_TABLE)}
            if info.category not in ALREADY_PRESENT or column not in present:
                raise
            logger.debug("%s.%s was added meanwhile: %s", HISTORY_TABLE, column, info.message)
        else:
            logger.info("added column %s to %s", column, HISTORY_TABLE)

    def _is_missing_table(self, exc: BaseException) -> bool:
        return classify_error(exc, self.db_type).category in ALREADY_ABSENT

    def _read(self, fn: Callable[[], Any], default: Any) -> Any:
        """Run a read that may meet a missing table: answer ``default`` then, never create it.

        Inside a caller's transaction the read runs in a savepoint, so that on
        PostgreSQL the "relation does not exist" error cannot abort that transaction.
        """
        try:
            if self.db.in_transaction():
                with self.db.savepoint():
                    return fn()
            return fn()
        except peewee.DatabaseError as exc:
            if not self._is_missing_table(exc):
                raise
            logger.debug("%s not there yet: %s", HISTORY_TABLE, classify_error(exc, self.db_type).message)
            return default

    # -- reads --------------------------------------------------------------

    def get_migration_history(self) -> list[HistoryRow]:
        """Every history row, oldest first (empty when the table does not exist)."""
        H = self.History

        def read() -> list[HistoryRow]:
            query = H.select().order_by(H.applied_at, H.id)
            return [
                HistoryRow(
                    r.migration_name,
                    r.status,
                    r.applied_at,
                    r.error_message,
                    r.duration_ms,
                    r.db_type,
                    r.checksum,
                    r.installed_by,
                    r.completed_operations,
                    r.owner,
                    r.progress_at,
                    r.progress_key,
                    r.inverse_plan,
                )
                for r in query
            ]

        rows: list[HistoryRow] = self._read(read, [])
        return rows

    def history_by_name(self) -> dict[str, HistoryRow]:
        return {row.migration_name: row for row in self.get_migration_history()}

    def has_migration_run(self, name: str) -> bool:
        """True when ``name`` has a ``success`` or ``skipped`` row (the applied invariant)."""
        H = self.History

        def read() -> bool:
            return bool(H.select().where((H.migration_name == name) & (H.status.in_(list(APPLIED)))).exists())

        result: bool = self._read(read, False)
        return result

    def is_up_to_date(self, digest: str, declared_count: int) -> bool:
        """One round trip: is this exact set of migrations recorded as fully applied, and nothing else?

        True when ``digest`` has a ``migration_state`` row and the history holds exactly
        ``declared_count`` rows (more rows mean migrations this code does not declare).
        """
        q = self.db.quote
        sql = (
            f"SELECT (SELECT COUNT(*) FROM {q[0]}{STATE_TABLE}{q[1]} WHERE digest = {self.db.param}), "
            f"(SELECT COUNT(*) FROM {q[0]}{HISTORY_TABLE}{q[1]})"
        )

        def read() -> bool:
            row = self.db.execute_sql(sql, (digest,)).fetchone()
            return bool(row and int(row[0]) == 1 and int(row[1]) == declared_count)

        result: bool = self._read(read, False)
        return result

    # -- writes -------------------------------------------------------------

    def check_lock(self) -> None:
        """Raise MigrationLockLost when the run's lock is known lost (no round trip)."""
        if self.lock is not None:
            self.lock.check()

    def _fenced(self) -> contextlib.AbstractContextManager[None]:
        """A write conditional on still holding the run's lock (else MigrationLockLost, nothing written)."""
        return self.lock.fenced() if self.lock is not None else contextlib.nullcontext()

    def record_migration(
        self,
        name: str,
        status: str,
        error: str | None = None,
        duration_ms: float | None = None,
        *,
        checksum: str | None = None,
        completed: int | None = None,
        owner: str | None = None,
        fence: peewee.ColumnBase | None = None,
        inverse: str | None = None,
    ) -> None:
        """Insert or replace the row of ``name`` (one row per migration, the latest outcome).

        ``completed``: operations in effect; ``owner``: the lock holder writing; ``fence``: a condition
        the write needs (the lock still ours): when it does not hold, nothing is written and
        :class:`MigrationLockLost` is raised. ``inverse``: the JSON inverse plan (kept when None).
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}, not {status!r}")
        H = self.History
        now = _utcnow()
        values: dict[Any, Any] = {
            H.status: status,
            H.applied_at: now,
            H.error_message: redact_text(error)[:ERROR_MAX_LENGTH] if error else None,
            H.duration_ms: None if duration_ms is None else round(duration_ms, 3),
            H.db_type: self.db_type,
            H.installed_by: installed_by(),
            H.completed_operations: completed,
            H.owner: owner[:OWNER_MAX_LENGTH] if owner else None,
            H.progress_at: now,
        }
        if checksum is not None:
            values[H.checksum] = checksum
        if status in APPLIED:
            values[H.progress_key] = None  # nothing left to resume
        if inverse is not None:
            values[H.inverse_plan] = inverse
        with self._fenced():  # the lease row touched in the same transaction (Galera: certified)
            if not self._upsert(name, values, fence) and fence is not None:
                raise _lock_lost(name)

    def _upsert(self, name: str, values: dict[Any, Any], fence: peewee.ColumnBase | None) -> int:
        """Insert the row of ``name``, or update it where it exists: one statement; the rows it touched."""
        H = self.History
        if fence is None:
            return self._cached_upsert(name, values)
        else:
            fields = [H.migration_name, *values]
            typed = [peewee.Value(value, converter=f.db_value) for f, value in values.items()]
            row = peewee.Select(columns=[peewee.Value(name), *typed])
            query = H.insert_from(row.where(fence), fields)
        target = [H.migration_name] if engine_for(self.db).upsert_names_key else None
        rows: int = query.on_conflict(conflict_target=target, update=values).as_rowcount().execute()
        return rows

    def _cached_upsert(self, name: str, values: dict[Any, Any]) -> int:
        """The unfenced upsert, its SQL rendered once per set of columns (cheaper than rendering)."""
        H = self.History
        fields = [H.migration_name, *values]
        params = [f.db_value(v) for f, v in zip(fields, [name, *values.values()])]
        key = tuple(f.name for f in fields)
        sql = self._upsert_sql.get(key)
        if sql is None:
            target = [H.migration_name] if engine_for(self.db).upsert_names_key else None
            query = H.insert_many([[name, *values.values()]], fields=fields)
            query = query.on_conflict(conflict_target=target, preserve=fields[1:]).as_rowcount()
            sql, rendered = query.sql()
            if list(rendered) == params:  # the order is ours: later writes reuse the text
                self._upsert_sql[key] = sql
            else:
                logger.debug("history upsert parameters differ from peewee's; not cached")
            params = list(rendered)
        rows: int = self.db.execute_sql(sql, params).rowcount
        return rows

    def update_progress(
        self, name: str, completed: int, *, key: str | None = None, fence: peewee.ColumnBase | None = None,
        inverse: str | None = None,
    ) -> None:
        """Record that ``completed`` operations of ``name`` are in effect (one UPDATE; the resume point).

        ``key``: within the next operation (a backfill), the last primary key done, as JSON; None clears it.
        ``inverse``: the inverse plan of the operations done so far, as JSON.
        """
        H = self.History
        values: dict[Any, Any] = {
            H.completed_operations: completed,
            H.progress_at: _utcnow(),
            H.progress_key: key,
        }
        if inverse is not None:
            values[H.inverse_plan] = inverse
        with self._fenced():
            if not self._update(name, values, fence):
                if fence is not None:
                    raise _lock_lost(name)
                logger.warning("no history row for %s to record its progress in", name)

    def _update(self, name: str, values: dict[Any, Any], fence: peewee.ColumnBase | None) -> int:
        H = self.History
        where = H.migration_name == name
        rows: int = H.update(values).where(where if fence is None else where & fence).execute()
        return rows

    def delete_migration(self, name: str) -> int:
        """Remove the row of ``name`` (``repair --clear``); the migration becomes pending again."""
        H = self.History
        deleted: int = H.delete().where(H.migration_name == name).execute()
        self.forget_digests()
        return deleted

    def record_digest(self, digest: str) -> None:
        """Remember that the set of migrations with this digest is fully applied."""
        S = self.State
        with self._fenced():
            if not S.select().where(S.digest == digest).exists():
                S.insert({S.digest: digest}).execute()

    def forget_digests(self) -> None:
        """Drop every remembered digest: the next boot checks the history row by row."""
        self._read(lambda: self.State.delete().execute(), 0)

    # -- decorator ----------------------------------------------------------

    def skip_if_run(self, name: str) -> Callable[[F], F]:
        """Decorate a function so it runs only while ``name`` is not applied, then records it ``success``."""

        def decorate(fn: F) -> F:
            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if self.has_migration_run(name):
                    logger.info("migration %s already applied, skipping", name)
                    return None
                self.init_tracking_table()
                result = fn(*args, **kwargs)
                self.record_migration(name, SUCCESS)
                return result

            return wrapper  # type: ignore[return-value]

        return decorate
