"""rehearse_migrations(): run the pending migrations for real on a scratch copy of the target database.

The scratch database lives on the same server (a file beside it on SQLite) and is made by the
engine (``Engine.create_scratch`` / ``copy_into_scratch``): the target's schema, the first
``rows`` rows of each table and the whole migration history, so that exactly the migrations
pending on the target are pending there. Each one is first previewed (the locks its statements
take, from the preview's analysis), then applied through ``migrate_db`` and timed. The scratch
database is dropped whatever happens; the target is only read.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import peewee

from api.db.engines import Engine, engine_for, state_of
from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError, MigrationError
from api.db.migrate.declarations import Migration, MigrationLike, plan_migrations
from api.db.migrate.runner import migrate_db, using_connection
from api.db.migrate.tracker import HISTORY_TABLE, STATE_TABLE, MigrationTracker
from api.db.preview.preview import preview_migration
from api.db.redact import redact_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RehearsedMigration:
    """How one pending migration went on the scratch copy."""

    name: str
    status: str  # success, skipped, failed, not_run (after an earlier failure)
    duration_ms: float | None
    locks: tuple[str, ...] = ()  # "ACCESS EXCLUSIVE on task (blocks writes)", from the preview's analysis
    statements: int = 0
    error: str | None = None


@dataclass
class RehearsalReport:
    """What a rehearsal copied, ran and found; ``ok`` when every pending migration succeeded."""

    engine: str
    target: str
    scratch: str
    rows: int
    tables: list[str] = field(default_factory=list)
    copy_ms: float = 0.0
    migrations: list[RehearsedMigration] = field(default_factory=list)
    scratch_dropped: bool = False
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return all(m.status in ("success", "skipped") for m in self.migrations)

    def summary(self) -> str:
        failed = [m.name for m in self.migrations if m.status == "failed"]
        text = (f"{self.engine}: rehearsed {len(self.migrations)} pending migration(s) on a copy of "
                f"{len(self.tables)} table(s) ({self.rows} row(s) each) in {self.duration_ms:.0f} ms")
        text += f"; failed: {', '.join(failed)}" if failed else "; all succeeded"
        return text + (
            "; scratch database dropped" if self.scratch_dropped else "; scratch database NOT dropped"
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        return data


def _locks(preview_statements: Sequence[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for statement in preview_statements:
        where = f" on {statement.table}" if statement.table else ""
        blocks = " (blocks writes)" if statement.blocks_writes else ""
        seen[f"{statement.lock}{where}{blocks}"] = None
    return tuple(seen)


def _rehearse_one(
    scratch: peewee.Database, applied: list[Migration], migration: Migration
) -> RehearsedMigration:
    """Preview, then apply ``migration`` on the scratch database (``applied`` already are)."""
    declared = [*applied, migration]
    preview = preview_migration(scratch, declared)
    locks = _locks(preview.statements)
    started = time.perf_counter()
    try:
        report = migrate_db(scratch, declared, lock_timeout=30.0)
    except MigrationError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        logger.warning("rehearsal: %s failed after %.1f ms: %s", migration.name, elapsed, exc)
        return RehearsedMigration(migration.name, "failed", elapsed, locks, len(preview.statements),
                                  redact_text(str(exc)))
    outcome = next((o for o in report.outcomes if o.name == migration.name), None)
    if outcome is None:  # applied meanwhile by nobody else: the scratch is ours, so this is a bug to report
        return RehearsedMigration(migration.name, "skipped", 0.0, locks, len(preview.statements), "not run")
    logger.info("rehearsal: %s %s in %.1f ms", migration.name, outcome.status, outcome.duration_ms)
    return RehearsedMigration(migration.name, outcome.status, outcome.duration_ms, locks,
                              len(preview.statements), outcome.reason)


def _run_pending(scratch: peewee.Database, planned: list[Migration]) -> list[RehearsedMigration]:
    with scratch.connection_context():
        history = MigrationTracker(scratch).history_by_name()
    applied = [m for m in planned if m.name in history and history[m.name].is_applied]
    results: list[RehearsedMigration] = []
    done = {m.name for m in applied}
    for migration in planned:
        if migration.name in done:
            continue
        if results and results[-1].status in ("failed", "not_run"):
            results.append(RehearsedMigration(migration.name, "not_run", None))
            continue
        with scratch.connection_context():
            result = _rehearse_one(scratch, applied, migration)
        results.append(result)
        applied.append(migration)
    return results


def _drop(engine: Engine, name: str, report: RehearsalReport) -> None:
    """Drop the scratch database; failing, log with what to run by hand, not raised over the cause."""
    try:
        engine.drop_scratch(name)
        report.scratch_dropped = not engine.scratch_exists(name)
    except peewee.DatabaseError as exc:
        info = classify_error(exc, engine.name)
        logger.error("the scratch database %s was not dropped (%s: %s): drop it by hand", name,
                     info.category.value, info.message)


def rehearse_migrations(
    db: peewee.Database, migrations: Iterable[MigrationLike], *, rows: int = 0
) -> RehearsalReport:
    """Copy ``db`` into a scratch database, apply the pending migrations there, report, drop the copy.

    ``rows``: how many rows of each table to copy (the migration history is copied whole).
    Raises :class:`~api.db.exceptions.ScratchDatabaseDenied` naming the privilege when the
    scratch database cannot be created, :class:`~api.db.exceptions.RehearsalError` when the
    copy cannot be made; a failing migration is reported, not raised.
    """
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 0:
        raise ConfigurationError(f"rows must be an integer >= 0, got {rows!r}")
    planned = plan_migrations(migrations)
    if isinstance(db, peewee.DatabaseProxy):
        db = db.obj
    started = time.perf_counter()
    engine = engine_for(db)
    name = engine.scratch_name(uuid.uuid4().hex[:8])
    report = RehearsalReport(engine.name, state_of(db).url or str(db.database), name, rows)
    with using_connection(db):
        engine.create_scratch(name)
        logger.info("rehearsal: scratch database %s created", name)
        try:
            scratch = engine.open_scratch(name)
            try:
                copy_started = time.perf_counter()
                report.tables = engine.copy_into_scratch(
                    scratch, rows, frozenset({HISTORY_TABLE, STATE_TABLE})
                )
                report.copy_ms = (time.perf_counter() - copy_started) * 1000
                report.migrations = _run_pending(scratch, planned)
            finally:
                scratch.close()
        finally:
            _drop(engine, name, report)
            report.duration_ms = (time.perf_counter() - started) * 1000
    logger.info("%s", report.summary())
    return report
