"""Read paths over the history (``status``, ``pending``, ``validate``) and ``repair``.

Reads never create a table: on a database without history every migration is pending.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import peewee

from api.db.exceptions import ConfigurationError
from api.db.migrate.declarations import (
    MigrationLike,
    _quick_names,
    migrations_digest,
    plan_migrations,
)
from api.db.migrate.lock import migration_lock
from api.db.migrate.runner import using_connection
from api.db.migrate.tracker import (
    FAILED,
    ROLLED_BACK,
    RUNNING,
    SUCCESS,
    HistoryRow,
    MigrationTracker,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationStatus:
    """One line of ``status``: a declared migration (or a recorded one the code no longer declares)."""

    name: str
    status: str  # pending, running, success, failed, skipped
    declared: bool
    applied_at: str | None = None
    duration_ms: float | None = None
    drift: bool = False
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "declared": self.declared,
            "applied_at": self.applied_at,
            "duration_ms": self.duration_ms,
            "drift": self.drift,
            "error_message": self.error_message,
        }


def migration_status(db: peewee.Database, migrations: Iterable[MigrationLike]) -> list[MigrationStatus]:
    """Declared migrations with their recorded state, then undeclared recorded ones; creates nothing."""
    planned = plan_migrations(migrations)
    with using_connection(db):
        history = MigrationTracker(db).history_by_name()
    lines: list[MigrationStatus] = []
    for migration in planned:
        row = history.get(migration.name)
        if row is None:
            lines.append(MigrationStatus(migration.name, "pending", True))
            continue
        drift = bool(row.is_applied and row.checksum and row.checksum != migration.checksum)
        lines.append(
            MigrationStatus(
                migration.name,
                row.status,
                True,
                row.applied_at.isoformat(sep=" ") if row.applied_at else None,
                row.duration_ms,
                drift,
                row.error_message,
            )
        )
    declared = {m.name for m in planned}
    for name, row in history.items():
        if name not in declared:
            lines.append(
                MigrationStatus(
                    name,
                    row.status,
                    False,
                    row.applied_at.isoformat(sep=" ") if row.applied_at else None,
                    row.duration_ms,
                    False,
                    row.error_message,
                )
            )
    return lines


def migration_state(db: peewee.Database, migrations: Iterable[MigrationLike]) -> dict[str, list[str]]:
    """Names by state: ``pending``, ``running``, ``failed`` (declared), ``unknown`` (recorded, undeclared)."""
    state: dict[str, list[str]] = {"pending": [], "running": [], "failed": [], "unknown": []}
    for line in migration_status(db, migrations):
        if not line.declared:
            state["unknown"].append(line.name)
        elif line.status in ("pending", "running", "failed"):
            state[line.status].append(line.name)
    return state


def pending_migrations(db: peewee.Database, migrations: Iterable[MigrationLike]) -> list[str]:
    """Names of declared migrations not applied yet; one round trip when none is (for readiness probes)."""
    items = list(migrations)
    names = _quick_names(items)
    if names is None:
        names = [m.name for m in plan_migrations(items)]
    tracker = MigrationTracker(db)
    with using_connection(db):
        if tracker.is_up_to_date(migrations_digest(names), len(names)):
            return []
        history = tracker.history_by_name()
    return [name for name in names if not (name in history and history[name].is_applied)]


def validate_migrations(db: peewee.Database, migrations: Iterable[MigrationLike]) -> list[MigrationStatus]:
    """Applied migrations whose definition now differs from the one recorded (drift); runs nothing."""
    return [line for line in migration_status(db, migrations) if line.drift]


REPAIR_ACTIONS = ("mark-applied", "clear")


def repair_migration(db: peewee.Database, name: str, action: str) -> HistoryRow:
    """For a ``failed`` or ``running`` migration a human has dealt with: ``mark-applied`` or ``clear``.

    ``mark-applied`` records it ``success`` (the operator completed it by hand);
    ``clear`` deletes its row, so the next ``migrate_db()`` runs it from the start.
    Takes the migration lock, so it cannot race a running boot. Returns the row as it was.
    """
    if action not in REPAIR_ACTIONS:
        raise ConfigurationError(f"repair action must be one of {', '.join(REPAIR_ACTIONS)}, got {action!r}")
    tracker = MigrationTracker(db)
    with using_connection(db), migration_lock(db, timeout=10.0) as handle:
        tracker.lock = handle
        row = tracker.history_by_name().get(name)
        if row is None:
            raise ConfigurationError(f"migration {name!r} has no history row: nothing to repair")
        if row.status not in (FAILED, RUNNING):
            raise ConfigurationError(
                f"migration {name!r} is {row.status}; repair only handles failed or running migrations"
            )
        if action == "clear":
            tracker.delete_migration(name)
        else:
            tracker.record_migration(name, SUCCESS, f"marked applied by repair (was {row.status})")
            tracker.forget_digests()
    logger.warning(
        "repair: migration %s was %s, now %s", name, row.status, "cleared" if action == "clear" else SUCCESS
    )
    return row


def _declared(migrations: Iterable[MigrationLike], name: str) -> Any:
    """The declaration of ``name``; an unknown name is a declaration error."""
    from api.db.exceptions import MigrationDeclarationError

    found = [m for m in plan_migrations(migrations) if m.name == name]
    if not found:
        raise MigrationDeclarationError(f"migration {name!r} is not declared; see `python -m api.db status`")
    return found[0]


def mark_applied(db: peewee.Database, migrations: Iterable[MigrationLike], name: str, reason: str) -> None:
    """Record the pending migration ``name`` as applied without running it (Alembic's stamp), with ``reason``.

    No inverse is recorded, so a rollback through it needs a declared ``down``.
    """
    migration = _declared(migrations, name)
    tracker = MigrationTracker(db)
    with using_connection(db), migration_lock(db, timeout=10.0):
        tracker.init_tracking_table()
        row = tracker.history_by_name().get(name)
        if row is not None and row.status not in (ROLLED_BACK,):
            raise ConfigurationError(
                f"migration {name!r} is {row.status}; mark-applied only records pending migrations "
                "(see `repair` for failed or running ones)"
            )
        tracker.record_migration(name, SUCCESS, f"marked applied without running: {reason}",
                                 checksum=migration.checksum, completed=0, inverse="")  # fmt: skip
        tracker.forget_digests()
    logger.warning("mark-applied: migration %s recorded as applied without running (%s)", name, reason)


def accept_checksum(db: peewee.Database, migrations: Iterable[MigrationLike], name: str) -> tuple[str, str]:
    """Record the current checksum of the edited, applied migration ``name`` (Flyway's repair); (old, new)."""
    migration = _declared(migrations, name)
    tracker = MigrationTracker(db)
    with using_connection(db), migration_lock(db, timeout=10.0):
        row = tracker.history_by_name().get(name)
        if row is None or not row.is_applied:
            status = "pending" if row is None else row.status
            raise ConfigurationError(
                f"migration {name!r} is {status}; --accept-checksum needs an applied migration"
            )
        H = tracker.History
        H.update({H.checksum: migration.checksum}).where(H.migration_name == name).execute()
    logger.warning("repair: migration %s now recorded with checksum %s", name, migration.checksum[:12])
    return row.checksum or "", migration.checksum
