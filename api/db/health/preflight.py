"""Preflight diagnostics: is this database fit for the application, before the first request?

:func:`get_extended_diagnostics` gathers the facts an operator asks for first
(engine, version, extensions, connection limits, inherited timeouts, migration
state) and judges each with a pass / warn / fail check. Every value in the
report is JSON-serializable; ``to_dict()`` gives the plain structure.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import peewee

from api.db.engines import FLAVOURS, db_type, engine_for, engine_named
from api.db.engines.info import ServerInfo, server_info
from api.db.engines.state import state_of
from api.db.error_handler import classify_error
from api.db.exceptions import ConfigurationError, DatabaseUnavailable
from api.db.migrate.declarations import plan_migrations
from api.db.redact import redact_url
from api.db.schema.pgvector import Support, check_pgvector
from api.db.tracing import preflight_attributes, traced

logger = logging.getLogger(__name__)


class Level(str, Enum):
    """How a check came out."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One judged fact: ``name``, its level and a sentence saying why (and what to do)."""

    name: str
    level: Level
    detail: str


@dataclass
class ExtendedPreflightReport:
    """Everything preflight found; ``ok`` when no check failed."""

    engine: str = ""
    flavour: str = ""
    server_version: str = ""
    database: str = ""
    url: str = ""
    available_extensions: dict[str, str] = field(default_factory=dict)
    installed_extensions: dict[str, str] = field(default_factory=dict)
    connection_pool_size: int | None = None
    server_max_connections: int | None = None
    current_connections: int | None = None
    timeouts: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    pgvector: dict[str, Any] | None = None
    uses_vectors: bool | None = None  # the declared migrations or models use vector types (None: not told)
    workers: int = 1  # processes sharing the server, each with its own pool (WEB_CONCURRENCY)
    migrations: dict[str, Any] = field(default_factory=dict)
    role: dict[str, Any] = field(default_factory=dict)  # MemberRole.as_dict() of the member reached
    pooler: str | None = None  # a pooler in front: configured or detected
    members: list[dict[str, Any]] = field(default_factory=list)  # routing databases: primary and replicas
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.level is not Level.FAIL for check in self.checks)

    def check(self, name: str, level: Level, detail: str) -> None:
        self.checks.append(Check(name, level, detail))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["checks"] = [{"name": c.name, "level": c.level.value, "detail": c.detail} for c in self.checks]
        data["ok"] = self.ok
        return data


def _server_version(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """The server is at least its flavour's ``min_version``."""
    minimum = FLAVOURS[info.flavour].min_version
    shown_min = ".".join(map(str, minimum))
    if info.version >= minimum:
        report.check("server_version", Level.PASS, f"{info.flavour} {info.version_text} (>= {shown_min})")
    else:
        report.check("server_version", Level.WARN,
                     f"{info.flavour} {info.version_text} is older than {shown_min}; upgrade")  # fmt: skip


def _connection_headroom(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """The pools of every worker fit in the server's connection limit and in what is free now."""
    per_worker, limit = report.connection_pool_size, report.server_max_connections
    if not per_worker or not limit:
        return
    workers = max(1, report.workers)
    pool = per_worker * workers
    what = (
        f"{workers} workers x POOL_MAX_CONNECTIONS {per_worker} = {pool}"
        if workers > 1
        else f"the pool's {pool}"
    )
    free = limit - (report.current_connections or 0)
    if pool > limit:
        report.check(
            "connection_headroom",
            Level.WARN,
            f"{what} connections may open but the server allows {limit}; "
            "lower POOL_MAX_CONNECTIONS or the workers, or raise max_connections",
        )
    elif pool > free:
        report.check("connection_headroom", Level.WARN,
                     f"{free} server connections are free now, fewer than {what}")  # fmt: skip
    else:
        report.check("connection_headroom", Level.PASS, f"{free} of {limit} server connections free")


def _statement_timeout(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """No PostgreSQL statement_timeout is inherited by migrations."""
    statement = report.timeouts.get("statement_timeout", "0")
    if statement not in ("0", "0ms"):
        report.check(
            "inherited_timeouts",
            Level.WARN,
            f"statement_timeout={statement} is inherited by migrations; a long index build may be cancelled",
        )
    else:
        report.check("inherited_timeouts", Level.PASS, "no statement_timeout inherited")


def _pgvector(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """pgvector is installed in a compatible version (a failure only when required)."""
    vector = report.pgvector or {}
    support = vector.get("support")
    if support == Support.NOT_INSTALLED.value and report.uses_vectors is False and not require_pgvector:
        report.check(
            "pgvector",
            Level.PASS,
            "pgvector not installed; the declared migrations and models use no vectors",
        )
    elif support == Support.NOT_INSTALLED.value:
        level = Level.FAIL if require_pgvector else Level.WARN
        report.check("pgvector", level, "; ".join(vector.get("reasons", [])) or "pgvector not installed")
    elif vector.get("compatible") and not vector.get("warnings"):
        report.check("pgvector", Level.PASS, f"pgvector {vector.get('installed_version')}")
    elif vector.get("compatible") or support == Support.UNTESTED.value:
        report.check("pgvector", Level.WARN, "; ".join(vector.get("warnings", [])))
    else:
        report.check("pgvector", Level.FAIL, "; ".join(vector.get("reasons", [])))


def _lock_wait_timeout(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """MySQL's lock_wait_timeout would not queue DDL for long."""
    wait = int(report.timeouts.get("lock_wait_timeout", "0") or 0)
    if wait > 60:
        report.check(
            "inherited_timeouts",
            Level.WARN,
            f"lock_wait_timeout={wait}s: a DDL statement would queue that long behind a long transaction "
            "(api.db sets its own bounded wait for migrations)",
        )
    else:
        report.check("inherited_timeouts", Level.PASS, f"lock_wait_timeout={wait}s")


def _charset(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """The MySQL database charset is utf8mb4."""
    charset = report.settings.get("character_set_database", "")
    if charset and charset != "utf8mb4":
        report.check("charset", Level.WARN,
                     f"database charset is {charset}; utf8mb4 stores every Unicode character")  # fmt: skip
    else:
        report.check("charset", Level.PASS, "utf8mb4")


def _journal_mode(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """SQLite runs in WAL mode."""
    mode = report.settings.get("journal_mode", "")
    if mode.lower() != "wal":
        report.check("journal_mode", Level.WARN,
                     f"journal_mode={mode}; WAL lets readers run during a migration")  # fmt: skip
    else:
        report.check("journal_mode", Level.PASS, "WAL")


def _pgvector_elsewhere(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """pgvector, when required, fails on an engine that cannot have it."""
    if require_pgvector:
        product = engine_named(info.engine).product_label(info.flavour)
        report.check("pgvector", Level.FAIL, f"pgvector needs PostgreSQL; this is {product}")


# A check judges the gathered facts and adds its verdicts to the report.
PreflightCheck = Callable[[ExtendedPreflightReport, ServerInfo, bool], None]

# Every engine's report starts with these checks.
COMMON_CHECKS: tuple[PreflightCheck, ...] = (_server_version, _connection_headroom)
# The checks an engine names in its ``preflight_checks``.
ENGINE_CHECKS: dict[str, PreflightCheck] = {
    "statement_timeout": _statement_timeout,
    "pgvector": _pgvector,
    "lock_wait_timeout": _lock_wait_timeout,
    "charset": _charset,
    "journal_mode": _journal_mode,
    "pgvector_elsewhere": _pgvector_elsewhere,
}


def _judge(report: ExtendedPreflightReport, info: ServerInfo, require_pgvector: bool) -> None:
    """Run the common checks, then the engine's own, in report order."""
    engine_checks = [ENGINE_CHECKS[name] for name in engine_named(info.engine).preflight_checks]
    for check in (*COMMON_CHECKS, *engine_checks):
        check(report, info, require_pgvector)


def _gather(database: peewee.Database, report: ExtendedPreflightReport, info: ServerInfo) -> None:
    """Copy the server's identity and facts into the report."""
    report.flavour = info.flavour
    report.server_version = info.version_string
    report.database = info.database
    report.installed_extensions = dict(info.extensions)
    report.available_extensions = dict(info.available_extensions)
    engine = engine_for(database)
    facts = engine.server_facts()
    report.server_max_connections = facts.max_connections
    report.current_connections = facts.current_connections
    report.timeouts.update(facts.timeouts)
    report.settings.update(facts.settings)
    if engine.has_pgvector:
        report.pgvector = check_pgvector(database).to_dict()


def _judge_role(database: peewee.Database, report: ExtendedPreflightReport) -> None:
    """The member's role (and a routing database's members): Galera not Synced fails, a replica warns."""
    engine = engine_for(database)
    try:
        with contextlib.closing(database.connection().cursor()) as cursor:
            role = engine.read_role(cursor)
    except peewee.DatabaseError as exc:
        info = classify_error(exc, report.engine)
        report.check("cluster_role", Level.WARN, f"role unreadable ({info.category.value}: {info.message})")
        return
    report.role = role.as_dict()
    pooler = getattr(database, "pooler_report", None)
    report.pooler = pooler() if callable(pooler) else None
    members = getattr(database, "members", None)
    report.members = list(members()) if callable(members) else []
    label = describe_role(report.role) + (f"; pooler: {report.pooler}" if report.pooler else "")
    if role.not_ready:
        report.check("cluster_role", Level.FAIL, f"{label}: {role.not_ready}")
    elif role.role == "replica":
        report.check("cluster_role", Level.WARN, f"{label}: writes and migrations need the primary")
    else:
        report.check("cluster_role", Level.PASS, label)


def describe_role(role: dict[str, Any]) -> str:
    """``replica, lag 0.2 s`` / ``galera_node Synced, cluster of 3`` / ``primary``."""
    text = str(role.get("role", "unknown"))
    if role.get("lag_seconds") is not None:
        lag = role["lag_seconds"]
        text += f", lag {lag:.1f} s" if isinstance(lag, float) else f", replication {lag}"
    if role.get("state"):
        text += f" {role['state']}, cluster of {role.get('cluster_size')}"
    return text


def _judge_migrations(report: ExtendedPreflightReport, state: dict[str, Any]) -> None:
    """Failed migrations fail the report; pending or running ones warn."""
    report.migrations = state
    if state.get("failed"):
        failed = ", ".join(state["failed"])
        report.check("migrations", Level.FAIL, f"failed migrations: {failed}; see `python -m api.db status`")
    elif state.get("pending") or state.get("running"):
        waiting = list(state.get("pending", [])) + list(state.get("running", []))
        report.check("migrations", Level.WARN,
                     f"{len(waiting)} migrations not applied yet: {', '.join(waiting[:5])}")  # fmt: skip
    else:
        report.check("migrations", Level.PASS, "every declared migration is applied")


def _web_concurrency() -> int:
    raw = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigurationError(
            f"WEB_CONCURRENCY={raw!r}: expected a whole number of worker processes (1 or more)"
        )
    return int(raw)


_VECTOR_TYPES = re.compile(r"\b(?:vector|halfvec|sparsevec|bit\s*\(\s*\d+\s*\))\b|VectorField", re.IGNORECASE)


def _definition_text(fn: Any) -> str:
    """The source of a migration function and the values it closes over (an SQL file's statements)."""
    try:
        source = inspect.getsource(fn)
    except (OSError, TypeError):  # built in a REPL or a C function: only the closure is known
        source = ""
    cells = [repr(cell.cell_contents) for cell in (getattr(fn, "__closure__", None) or ())]
    return source + " " + " ".join(cells)


def declares_vectors(migrations: Iterable[Any] = (), models: Iterable[type[peewee.Model]] = ()) -> bool:
    """True when a model field or a migration's definition names a pgvector type."""
    for model in models:
        if any(_VECTOR_TYPES.search(str(f.field_type)) for f in model._meta.sorted_fields):
            return True
    return any(_VECTOR_TYPES.search(_definition_text(m.fn)) for m in plan_migrations(list(migrations)))


# Supplies migration state for the report: (database) -> dict with pending/failed/running lists.
MigrationStateReader = Callable[[peewee.Database], dict[str, Any]]


@traced("preflight", operation="preflight", result=preflight_attributes)
def get_extended_diagnostics(
    database: peewee.Database,
    *,
    migration_state: MigrationStateReader | None = None,
    require_pgvector: bool = False,
    uses_vectors: bool | None = None,
    workers: int | None = None,
) -> ExtendedPreflightReport:
    """Gather and judge the preflight facts of ``database``; an unreachable server fails a check.

    ``uses_vectors``: whether the application uses vector types (:func:`declares_vectors`); False turns a
    missing pgvector from a warning into a pass. ``workers``: processes each opening a pool of this
    size (default ``$WEB_CONCURRENCY``, else 1), compared with the server's free connections.
    """
    report = ExtendedPreflightReport(engine=db_type(database), url=state_of(database).url)
    report.uses_vectors = uses_vectors
    report.workers = workers if workers is not None else _web_concurrency()
    pool_size = getattr(database, "_max_connections", None)
    report.connection_pool_size = int(pool_size) if pool_size else None
    try:
        info = server_info(database)
    except (peewee.DatabaseError, DatabaseUnavailable) as exc:
        error = classify_error(getattr(exc, "orig", None) or exc, report.engine)
        logger.error(
            "preflight: cannot reach %s: %s", redact_url(report.url), error.message,
            extra={"event": "preflight", "check": "connectivity", "status": "fail", "engine": report.engine,
                   "error_category": error.category.value},
        )  # fmt: skip
        report.check("connectivity", Level.FAIL, f"{error.category.value}: {error.message}")
        return report
    report.check("connectivity", Level.PASS, "connected")
    _gather(database, report, info)
    _judge(report, info, require_pgvector)
    _judge_role(database, report)
    if migration_state is not None:
        _judge_migrations(report, migration_state(database))
    for check in report.checks:
        if check.level is not Level.PASS:
            logger.warning(
                "preflight %s: %s: %s", check.name, check.level.value, check.detail,
                extra={"event": "preflight", "check": check.name, "status": check.level.value,
                       "engine": report.engine},
            )  # fmt: skip
    return report
