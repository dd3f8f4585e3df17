"""``python -m api.db``: the command-line layer, and the only place in the package that prints.

Each subcommand is a function ``(args) -> exit code`` registered in
:func:`build_parser`. Errors of the package (``ApiDbError``) become one line on
stderr and exit code 2; the URL shown anywhere has its password masked.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Callable

from api.db.engines.info import server_info
from api.db.engines.state import state_of
from api.db.exceptions import ApiDbError, ConfigurationError
from api.db.logfields import LOG_FORMATS, configure_logging
from api.db.pool.connect import connect
from api.db.redact import install_log_filter, redact_text

Handler = Callable[[argparse.Namespace], int]


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(redact_text(json.dumps(data, indent=2, sort_keys=True, default=str)))
    else:
        print(redact_text(text))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table, for terminals and logs."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@contextlib.contextmanager
def opened(args: argparse.Namespace) -> Iterator[Any]:
    """The database named by ``--database`` (or ``$DATABASE_URL``); every pooled connection closed on exit."""
    overrides: dict[str, Any] = {}
    if getattr(args, "connect_timeout", None) is not None:
        overrides["connect_timeout"] = args.connect_timeout
    if getattr(args, "no_retry", False):
        overrides["retry_max_attempts"] = 1
    database = connect(args.database, **overrides)
    try:
        yield database
    finally:
        close_all = getattr(database, "close_all", None)
        if close_all is not None:
            close_all()
        else:
            database.close()


def cmd_info(args: argparse.Namespace) -> int:
    """Print the engine, flavour, version and extensions of the database."""
    with opened(args) as database:
        info = server_info(database)
    data = info.to_dict()
    data["url"] = state_of(database).url
    rows = [
        ("url", data["url"]),
        ("engine", info.engine),
        ("flavour", info.flavour),
        ("version", info.version_string),
        ("database", info.database),
        ("extensions", ", ".join(f"{k} {v}" for k, v in sorted(info.extensions.items())) or "-"),
    ]
    _emit(args, data, format_table(("field", "value"), rows))
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    """Print the preflight report; exit 1 when any check fails."""
    from api.db.health.preflight import declares_vectors, get_extended_diagnostics
    from api.db.migrate.status import migration_state

    migrations = load_migrations(args.migrations) if args.migrations else None
    models = load_models(args.models) if args.models else []
    with opened(args) as database:
        report = get_extended_diagnostics(
            database,
            require_pgvector=args.require_pgvector,
            migration_state=(lambda db: migration_state(db, migrations)) if migrations is not None else None,
            uses_vectors=declares_vectors(migrations or [], models),
            workers=args.workers,
        )
    facts = [
        ("engine", f"{report.flavour or report.engine} {report.server_version}".strip()),
        ("database", report.database),
        ("pool size", report.connection_pool_size),
        (
            "server connections",
            f"{report.current_connections} of {report.server_max_connections}"
            if report.server_max_connections
            else "-",
        ),
        ("timeouts", ", ".join(f"{k}={v}" for k, v in report.timeouts.items()) or "-"),
        ("extensions", ", ".join(f"{k} {v}" for k, v in sorted(report.installed_extensions.items())) or "-"),
    ]
    checks = [(c.level.value.upper(), c.name, c.detail) for c in report.checks]
    text = (
        format_table(("fact", "value"), facts) + "\n\n" + format_table(("level", "check", "detail"), checks)
    )
    _emit(args, report.to_dict(), text)
    return 0 if report.ok else 1


def load_list(spec: str | None, option: str, example: str) -> list[Any]:
    """Import ``module:ATTR`` named by ``option`` (the current directory is importable) and return a list.

    ATTR may be dotted, and may name a callable that returns the list.
    """
    if not spec:
        raise ConfigurationError(f"this command needs {option} module:ATTR (for example {example})")
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"{option} {spec!r}: expected module:ATTR, for example {example}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"{option} {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(f"{option} {spec!r}: {module_name} has no attribute {attr}")
        target = getattr(target, part)
    if callable(target) and not isinstance(target, (list, tuple)):
        target = target()
    return list(target)


def load_migrations(spec: str | None) -> list[Any]:
    """The migrations list named by ``--migrations module:ATTR``."""
    return load_list(spec, "--migrations", "myapp.migrations:MIGRATIONS")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f} ms"


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and print the report."""
    from api.db.migrate.runner import migrate_db

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        report = migrate_db(
            database,
            migrations,
            lock_timeout=args.lock_timeout,
            atomic=args.atomic,
            on_unknown=args.on_unknown,
            target=args.to,
        )
    rows = [(o.name, o.status, _ms(o.duration_ms), o.reason or "") for o in report.outcomes]
    text = report.summary()
    if rows:
        text = format_table(("migration", "status", "duration", "note"), rows) + "\n" + text
    _emit(args, report.to_dict(), text)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print each migration's state; with --check, exit 1 when any is pending, running, failed or changed."""
    from api.db.migrate.status import migration_status

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        lines = migration_status(database, migrations)
    rows = [
        (
            line.name + ("" if line.declared else " (not declared)"),
            line.status,
            line.applied_at or "",
            _ms(line.duration_ms),
            "CHANGED" if line.drift else "",
        )
        for line in lines
    ]
    _emit(
        args,
        [line.to_dict() for line in lines],
        format_table(("name", "status", "applied_at", "duration", "drift"), rows),
    )
    if args.check and any(line.declared and (line.status not in ("success", "skipped") or line.drift)
                          for line in lines):  # fmt: skip
        return 1
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    """Print the migration_history table, oldest first."""
    from api.db.migrate.tracker import MigrationTracker

    with opened(args) as database:
        with database.connection_context():
            history = MigrationTracker(database).get_migration_history()
    rows = [
        (
            r.migration_name,
            r.status,
            r.applied_at or "",
            _ms(r.duration_ms),
            r.installed_by or "",
            (r.error_message or "").splitlines()[0][:80] if r.error_message else "",
        )
        for r in history
    ]
    _emit(
        args,
        [r.to_dict() for r in history],
        format_table(("name", "status", "applied_at", "duration", "installed_by", "message"), rows),
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Check the declarations and report applied migrations whose definition changed; exit 1 on drift."""
    from api.db.migrate.status import validate_migrations

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        drifted = validate_migrations(database, migrations)
    if drifted:
        rows = [(line.name, line.status, line.applied_at or "") for line in drifted]
        text = (
            format_table(("changed since applied", "status", "applied_at"), rows)
            + "\napplied migrations are never re-run: revert the change, or add a new migration"
        )
    else:
        text = f"{len(migrations)} migration(s) declared correctly; none changed since applied"
    _emit(args, {"declared": len(migrations), "drift": [line.to_dict() for line in drifted]}, text)
    return 1 if drifted else 0


def cmd_repair(args: argparse.Namespace) -> int:
    """Mark a failed or running migration applied, clear it, or accept an applied one's new checksum."""
    from api.db.migrate.status import accept_checksum, repair_migration

    if args.accept_checksum:
        with opened(args) as database:
            old, new = accept_checksum(database, load_migrations(args.migrations), args.name)
        _emit(args, {"name": args.name, "was": old, "checksum": new},
              f"{args.name}: checksum {old[:12] or '-'} replaced by {new[:12]}; "
              "it is no longer reported as changed")
        return 0
    action = "clear" if args.clear else "mark-applied"
    with opened(args) as database:
        before = repair_migration(database, args.name, action)
    outcome = (
        "cleared: the next migrate_db() runs it again" if action == "clear" else "marked applied (success)"
    )
    _emit(
        args,
        {"name": args.name, "was": before.status, "action": action},
        f"{args.name}: was {before.status}; {outcome}",
    )
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Undo applied migrations after --to NAME, or the last --steps N; --dry-run prints the plan only."""
    from api.db.migrate.rollback import plan_rollback, rollback_db

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        if args.dry_run:
            steps = plan_rollback(database, migrations, to=args.to, steps=args.steps)
            rows = [(s.name, "recorded inverse" if s.derived else "declared down") for s in steps]
            text = (format_table(("would roll back", "how"), rows) if rows else "nothing to roll back")
            _emit(args, {"plan": [s.name for s in steps]}, text + "\n(dry run: nothing changed)")
            return 0
        report = rollback_db(
            database, migrations, to=args.to, steps=args.steps, lock_timeout=args.lock_timeout
        )
    _emit(args, report.to_dict(), report.summary())
    return 0


def cmd_sql(args: argparse.Namespace) -> int:
    """Print the SQL of one migration (or, with --down, of its rollback), captured; nothing changes."""
    from api.db.preview.preview import migration_sql

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        statements = migration_sql(database, migrations, args.name, down=args.down)
    _emit(args, {"name": args.name, "down": args.down, "statements": statements},
          "\n".join(s.rstrip().rstrip(";") + ";" for s in statements) or "-- no statement")
    return 0


def cmd_mark_applied(args: argparse.Namespace) -> int:
    """Record a pending migration as applied without running it, with the reason."""
    from api.db.migrate.status import mark_applied

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        mark_applied(database, migrations, args.name, args.reason)
    _emit(
        args,
        {"name": args.name, "reason": args.reason},
        f"{args.name}: recorded as applied, not run ({args.reason})",
    )
    return 0


HEALTH_TOKEN_ENV = "API_DB_HEALTH_TOKEN"


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve /health/live, /health/ready, /health/detailed and /metrics until interrupted."""


    migrations = load_migrations(args.migrations) if args.migrations else None
    with opened(args) as database:
        return _serve(args, database, migrations)


def serve_limits(args: argparse.Namespace) -> Any:
    """The probe server's limits from the ``serve`` flags."""
    from api.db.health.wsgi import ServeLimits

    return ServeLimits(
        threads=args.threads, connection_limit=args.connection_limit, channel_timeout=args.channel_timeout,
        backlog=args.backlog, max_request_header_size=args.max_header_bytes,
    )  # fmt: skip


def _serve(args: argparse.Namespace, database: Any, migrations: list[Any] | None) -> int:
    from api.db.health.wsgi import (
        bound_address,
        health_app,
        make_bounded_server,
        serve_until_stopped,
    )

    limits = serve_limits(args)
    app = health_app(
        database,
        migrations,
        cache_ttl=args.cache_ttl,
        expose_details=args.expose_details,
        token=os.environ.get(HEALTH_TOKEN_ENV) or None,
    )
    try:
        server = make_bounded_server(app, args.host, args.port, limits)
    except BaseException:
        app.close()
        raise
    host, port = bound_address(server)
    print(
        redact_text(f"serving health endpoints of {state_of(database).url} on http://{host}:{port}"),
        flush=True,
    )
    print(f"  /health/live  /health/ready  /health/detailed  /metrics  ({limits.threads} threads, "
          f"{limits.connection_limit} connections, {limits.channel_timeout:g}s idle timeout; Ctrl-C stops)",
          flush=True)  # fmt: skip
    try:
        serve_until_stopped(server, limits)  # Ctrl-C or SIGTERM
        print("stopped", flush=True)
    finally:
        app.close()
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print what the pending migrations would do (statements, locks, sizes, time, warnings); runs nothing."""
    from api.db.preview.analysis import format_bytes
    from api.db.preview.capture import strip_statement_settings
    from api.db.preview.preview import preview_migration

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        preview = preview_migration(database, migrations, large_table_rows=args.large_table_rows)
    if not preview.pending:
        text = f"{preview.engine}: nothing pending; nothing would run"
    else:
        rows = [
            (
                s.migration,
                s.table or "-",
                s.lock,
                "yes" if s.blocks_writes else "no",
                "yes" if s.rewrites_table else "no",
                "new" if s.table_rows is None else f"{s.table_rows} / {format_bytes(s.table_bytes)}",
                str(s.estimate),
                _shorten(strip_statement_settings(s.sql)),
            )
            for s in preview.statements
        ]
        headers = ("migration", "table", "lock", "blocks writes", "rewrite", "rows / size", "estimate",
                   "statement")
        text = (
            f"{preview.engine} {preview.server_version}: {len(preview.pending)} pending migration(s), "
            f"{len(preview.statements)} statement(s), estimated {preview.estimated_duration}, "
            f"table lock: {'yes' if preview.requires_table_lock else 'no'}\n"
            + (format_table(headers, rows) if rows else "(no statement captured)")
        )
        if preview.warnings:
            text += "\n\nwarnings:\n" + "\n".join(f"- [{w.code}] {w}" for w in preview.warnings)
    _emit(args, preview.to_dict(), text)
    return 0


def _shorten(sql: str, limit: int = 100) -> str:
    flat = " ".join(redact_text(sql).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def load_models(spec: str | None) -> list[Any]:
    """The Peewee models named by ``--models module:ATTR`` (a list, or a callable returning one)."""
    import peewee

    models = load_list(spec, "--models", "myapp.models:MODELS")
    wrong = [repr(m) for m in models if not (isinstance(m, type) and issubclass(m, peewee.Model))]
    if wrong:
        raise ConfigurationError(f"--models {spec!r}: not Peewee model classes: {', '.join(wrong[:5])}")
    return models


def cmd_verify(args: argparse.Namespace) -> int:
    """Compare the models with the live schema; exit 1 when any difference may break the application."""
    from api.db.schema.verify import verify_schema

    models = load_models(args.models)
    with opened(args) as database:
        with database.connection_context():
            report = verify_schema(database, models)
    if report.differences:
        rows = [
            (
                d.severity.upper(),
                d.kind,
                f"{d.table}.{d.column}" if d.column else d.table,
                d.expected,
                d.actual,
            )
            for d in report.differences
        ]
        text = format_table(("severity", "difference", "where", "expected", "found"), rows)
    else:
        text = f"{len(models)} model(s) match the database"
    _emit(args, report.to_dict(), text)
    return 0 if report.ok else 1


def cmd_makemigration(args: argparse.Namespace) -> int:
    """Write a migration from the models' difference with the database (exit 0, also with nothing to do)."""
    from api.db.migrate.makemigration import make_migration, parse_rename

    models = load_models(args.models)
    renames = [parse_rename(spec) for spec in args.rename or ()]
    with opened(args) as database:
        result = make_migration(database, models, source_spec=args.models, name=args.name, out=args.out,
                                renames=renames, allow_drop=args.allow_drop)
    if result.written:
        text = f"wrote {len(result.migrations)} migration(s) to {result.path}:\n" + "\n".join(
            f"  {name}" for name in result.migrations)
    else:
        text = "no changes: the models match the database; nothing written"
    if result.undecided:
        text += (
            "\nnot generated (decide, then rerun with --rename / --allow-drop or add by hand):\n"
            + "\n".join(f"  {line}" for line in result.undecided)
        )
    data = {"path": result.path, "migrations": list(result.migrations), "undecided": list(result.undecided),
            "notes": list(result.notes)}
    _emit(args, data, text)
    return 0


def cmd_rehearse(args: argparse.Namespace) -> int:
    """Run the pending migrations on a scratch copy and report durations, locks, errors (exit 1: failed)."""
    from api.db.preview.rehearse import rehearse_migrations

    migrations = load_migrations(args.migrations)
    with opened(args) as database:
        report = rehearse_migrations(database, migrations, rows=args.rows)
    rows = [
        (m.name, m.status, _ms(m.duration_ms), "; ".join(m.locks) or "-", _shorten(m.error or "", 80))
        for m in report.migrations
    ]
    text = report.summary()
    if rows:
        text = format_table(("migration", "status", "duration", "locks", "error"), rows) + "\n" + text
    _emit(args, report.to_dict(), text)
    return 0 if report.ok else 1


Arg = tuple[tuple[str, ...], dict[str, Any]]  # the flags and keywords of one add_argument call


def arg(*flags: str, **options: Any) -> Arg:
    """One ``add_argument`` call as data."""
    return flags, options




@dataclass(frozen=True)
class Exclusive:
    """Arguments of which exactly one must be given (a required mutually exclusive group)."""

    arguments: tuple[Arg, ...]


@dataclass(frozen=True)
class Subcommand:
    """One ``python -m api.db`` subcommand: its name, help line, arguments in help order, and handler."""

    name: str
    help: str
    arguments: tuple[Arg | Exclusive, ...]
    handler: Handler


# Accepted before or after the subcommand: ``--json status`` and ``status --json`` are the same.
GLOBAL_ARGUMENTS: tuple[Arg, ...] = (
    arg("--database", metavar="URL", default=None,
        help="database URL (default: $DATABASE_URL); postgresql://, mysql://, mariadb://, "
             "sqlite:///relative/path.db or sqlite:////absolute/path.db"),
    arg("--migrations", metavar="MODULE:ATTR", default=None,
        help="where the migrations list lives, e.g. myapp.migrations:MIGRATIONS"),
    arg("--json", action="store_true", default=False, help="machine-readable output"),
    arg("--connect-timeout", metavar="SECONDS", type=float, default=None,
        help="seconds for one connection attempt (default: $DB_CONNECT_TIMEOUT, 10)"),
    arg("--no-retry", action="store_true", default=False,
        help="one connection attempt, no backoff: an unreachable server fails at once"),
    arg("-v", "--verbose", action="count", default=0, help="log more (-v INFO, -vv DEBUG)"),
    arg("--log-format", choices=LOG_FORMATS, default="text",
        help="log lines as text or one JSON object each"),
)  # fmt: skip

SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("info", "show what the framework knows about the database", (), cmd_info),
    Subcommand(
        "preflight",
        "check that the database is fit for the application (exit 1 on failure)",
        (
            arg("--require-pgvector", action="store_true", help="fail when pgvector is missing"),
            arg("--workers", type=int, default=None,
                help="processes sharing the server, each with its own pool (default: $WEB_CONCURRENCY, 1)"),
            arg("--models", metavar="MODULE:ATTR", default=None,
                help="the application's models: "
                     "pgvector is checked only when they or the migrations use vectors"),
        ),
        cmd_preflight,
    ),
    Subcommand(
        "migrate",
        "apply pending migrations (locked; atomic where the engine allows)",
        (
            arg("--lock-timeout", type=float, default=300.0, help="seconds to wait for the lock (300)"),
            arg("--atomic", choices=("all", "each"), default="all", help="one transaction, or one each"),
            arg("--on-unknown", choices=("warn", "error"), default="warn", help="undeclared history rows"),
            arg("--to", metavar="NAME", default=None, help="apply up to and including NAME"),
        ),
        cmd_migrate,
    ),
    Subcommand(
        "rollback",
        "undo applied migrations, newest first (locked; atomic where the engine allows)",
        (
            Exclusive((
                arg("--to", metavar="NAME", default=None, help="undo everything applied after NAME"),
                arg("--steps", metavar="N", type=int, default=None, help="undo the last N applied"),
            )),
            arg("--dry-run", action="store_true", help="print the plan; change nothing"),
            arg("--lock-timeout", type=float, default=300.0, help="seconds to wait for the lock (300)"),
        ),
        cmd_rollback,
    ),
    Subcommand(
        "sql",
        "the SQL of one migration, captured without changing anything",
        (arg("name", help="the migration's name"),
         arg("--down", action="store_true", help="the SQL of its rollback instead")),
        cmd_sql,
    ),
    Subcommand(
        "mark-applied",
        "record a pending migration as applied without running it",
        (arg("name", help="the migration's name"),
         arg("--reason", default="marked by hand", help="why (stored in the history)")),
        cmd_mark_applied,
    ),
    Subcommand(
        "status",
        "table of migrations: name, status, applied_at, duration, drift",
        (arg("--check", action="store_true", help="exit 1 when anything is pending or failed"),),
        cmd_status,
    ),
    Subcommand("history", "the migration_history table", (), cmd_history),
    Subcommand("validate", "report migrations changed since applied (drift); runs nothing", (),
               cmd_validate),
    Subcommand(
        "repair",
        "mark a failed/running migration applied, or clear it",
        (
            arg("name", help="the migration's name"),
            Exclusive((
                arg("--mark-applied", action="store_true",
                    help="record it success (you completed it by hand)"),
                arg("--clear", action="store_true", help="delete its row; the next boot runs it again"),
                arg("--accept-checksum", action="store_true",
                    help="record the current checksum of an edited, applied migration"),
            )),
        ),
        cmd_repair,
    ),
    Subcommand(
        "serve",
        "serve the health probes and /metrics over HTTP (waitress, bounded)",
        (
            arg("--host", default="127.0.0.1", help="address to bind (127.0.0.1)"),
            arg("--port", type=int, default=8080, help="port to bind (8080; 0 picks a free one)"),
            arg("--cache-ttl", type=float, default=5.0, help="seconds a health result is reused (5)"),
            arg("--expose-details", action="store_true",
                help="show error text and versions in /health/detailed"),
            arg("--threads", type=int, default=4, help="requests handled at once (4)"),
            arg("--connection-limit", type=int, default=2000,
                help="open connections before the server stops accepting (2000)"),
            arg("--channel-timeout", type=float, default=10.0,
                help="seconds an idle or half-sent connection is kept (10)"),
            arg("--backlog", type=int, default=2048, help="connections the kernel queues (2048)"),
            arg("--max-header-bytes", type=int, default=8192, help="largest request head in bytes (8192)"),
        ),
        cmd_serve,
    ),
    Subcommand(
        "plan",
        "dry-run: statements, locks, table sizes, duration and warnings; runs nothing",
        (
            arg("--large-table-rows", type=int, default=100_000,
                help="rows from which a table is large (100000)"),
        ),
        cmd_plan,
    ),
    Subcommand(
        "verify",
        "compare Peewee models with the live schema (exit 1 on an error)",
        (
            arg("--models", metavar="MODULE:ATTR", required=True,
                help="a list of models, e.g. myapp.models:MODELS"),
        ),
        cmd_verify,
    ),
    Subcommand(
        "makemigration",
        "write a migration module from the difference between models and the database",
        (
            arg("--models", metavar="MODULE:ATTR", required=True,
                help="a list of models, e.g. myapp.models:MODELS"),
            arg("--name", default=None, help="module name (NAME.py) and prefix of each migration's name"),
            arg("--out", metavar="PATH", default=None,
                help="the file to write (default NAME.py); never overwritten"),
            arg("--rename", metavar="TABLE.OLD:NEW", action="append",
                help="a column renamed, not dropped and added (repeatable)"),
            arg("--allow-drop", action="store_true",
                help="generate drop_column for columns the models lack (else listed as comments)"),
        ),
        cmd_makemigration,
    ),
    Subcommand(
        "rehearse",
        "apply pending migrations on a scratch copy: real durations, locks, errors (exit 1 on a failure)",
        (
            arg("--rows", type=int, default=0,
                help="rows of each table to copy (0; the history is copied whole)"),
        ),
        cmd_rehearse,
    ),
)  # fmt: skip


def _add_arguments(parser: Any, arguments: Sequence[Arg | Exclusive]) -> None:
    """Add ``arguments`` to ``parser`` in order; an :class:`Exclusive` becomes a required group."""
    for argument in arguments:
        if isinstance(argument, Exclusive):
            _add_arguments(parser.add_mutually_exclusive_group(required=True), argument.arguments)
        else:
            flags, options = argument
            parser.add_argument(*flags, **options)


def _global_options(suppress: bool) -> argparse.ArgumentParser:
    """The global options; with ``suppress`` their defaults keep those given before the subcommand."""
    parser = argparse.ArgumentParser(add_help=False)
    for flags, options in GLOBAL_ARGUMENTS:
        parser.add_argument(*flags, **({**options, "default": argparse.SUPPRESS} if suppress else options))
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m api.db`` parser, one subparser per entry of :data:`SUBCOMMANDS`."""
    parser = argparse.ArgumentParser(
        prog="python -m api.db",
        description="Boot-time migrations and connection diagnostics for Peewee databases.",
        parents=[_global_options(suppress=False)],
    )
    after = _global_options(suppress=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in SUBCOMMANDS:
        subparser = sub.add_parser(command.name, help=command.help, parents=[after])
        _add_arguments(subparser, command.arguments)
        subparser.set_defaults(handler=command.handler)
    return parser


class _ShownByTheCLI(logging.Filter):
    """Drops the log records whose message the CLI prints itself (one line each, not two)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


# Loggers whose final errors (connection failed for good) or check results the CLI prints in its own words.
QUIET_LOGGERS = ("api.db.pool.retry", "api.db.health.preflight")


def _configure_logging(verbose: int, log_format: str = "text") -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    configure_logging(level, log_format)
    if verbose == 0:
        logging.getLogger("api.db.pool.retry").addFilter(_ShownByTheCLI())
        # the report table shows each check
        logging.getLogger("api.db.health.preflight").setLevel(logging.ERROR)


def _quiet_broken_pipe() -> int:
    """The reader went away (``| head``): stop quietly; further output goes to /dev/null."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 0


def _parse(argv: Sequence[str] | None) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code argparse chose (0 after --help, 2 on a usage error)."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; the exit code is 0 (done), 1 (a check failed) or 2 (an error, a line on stderr)."""
    args = _parse(argv)
    if isinstance(args, int):
        return args
    _configure_logging(args.verbose, args.log_format)
    install_log_filter()
    handler: Handler = args.handler
    try:
        code = handler(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except ApiDbError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # driver errors: classify and show one line, never a DSN
        from api.db.error_handler import classify_error

        info = classify_error(exc)
        print(f"error: {info.category.value}: {redact_text(info.message)}", file=sys.stderr)
        return 2
