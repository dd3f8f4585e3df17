"""``python -m api.db``: the command-line layer, and the only place in the package that prints.

Each subcommand is a function ``(args) -> exit code`` registered in
:func:`build_parser`. Errors of the package (``ApiDbError``) become one line on
stderr and exit code 2; the URL shown anywhere has its password masked.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, Callable

from api.db.connection import connect
from api.db.exceptions import ApiDbError
from api.db.info import server_info
from api.db.redact import redact_text

Handler = Callable[[argparse.Namespace], int]


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width table, for terminals and logs."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_info(args: argparse.Namespace) -> int:
    """Print the engine, flavour, version and extensions of the database."""
    database = connect(args.database)
    try:
        info = server_info(database)
    finally:
        database.close()
    data = info.to_dict()
    data["url"] = getattr(database, "api_db_url", "")
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
    from api.db.preflight import get_extended_diagnostics

    database = connect(args.database)
    try:
        report = get_extended_diagnostics(database, require_pgvector=args.require_pgvector)
    finally:
        database.close()
    facts = [
        ("engine", f"{report.flavour or report.engine} {report.server_version}".strip()),
        ("database", report.database),
        ("pool size", report.connection_pool_size),
        ("server connections", f"{report.current_connections} of {report.server_max_connections}"),
        ("timeouts", ", ".join(f"{k}={v}" for k, v in report.timeouts.items()) or "-"),
        ("extensions", ", ".join(f"{k} {v}" for k, v in sorted(report.installed_extensions.items())) or "-"),
    ]
    checks = [(c.level.value.upper(), c.name, c.detail) for c in report.checks]
    text = format_table(("fact", "value"), facts) + "\n\n" + format_table(("level", "check", "detail"), checks)
    _emit(args, report.to_dict(), text)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m api.db",
        description="Boot-time migrations and connection diagnostics for Peewee databases.",
    )
    parser.add_argument(
        "--database",
        metavar="URL",
        default=None,
        help="database URL (default: $DATABASE_URL); postgresql://, mysql://, mariadb://, sqlite:///",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-v INFO, -vv DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    info = sub.add_parser("info", help="show what the framework knows about the database")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(handler=cmd_info)

    preflight = sub.add_parser("preflight", help="check that the database is fit for the application (exit 1 on failure)")
    preflight.add_argument("--json", action="store_true", help="machine-readable output")
    preflight.add_argument("--require-pgvector", action="store_true", help="fail when pgvector is missing")
    preflight.set_defaults(handler=cmd_preflight)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler: Handler = args.handler
    try:
        return handler(args)
    except ApiDbError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # driver errors: classify and show one line, never a DSN
        from api.db.errors import classify_error

        info = classify_error(exc)
        print(f"error: {info.category.value}: {info.message}", file=sys.stderr)
        return 2
