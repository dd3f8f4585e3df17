"""A Flask application under gunicorn: an app factory that migrates at boot and serves the probes.

    DATABASE_URL=postgresql://app:secret@db/app PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \\
        gunicorn -w 4 --preload -c examples/gunicorn_conf.py 'examples.flask_app:create_app()'

``playhouse.flask_utils.FlaskDB`` opens a pooled connection before each request and hands it back
after; ``migrate_db`` runs once per process at boot (under the migration lock: the first applies, the
others find nothing pending), or once in the master with ``--preload`` (the workers' pools then drop
the connections inherited through the fork and open their own). The probes answer at
``/health/live``, ``/health/ready``, ``/health/detailed`` and ``/metrics``.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable

from flask import Flask, jsonify
from peewee import CharField, DateTimeField, IntegerField
from playhouse.flask_utils import FlaskDB

from api.db import connect, health_app, migrate_db
from api.db.health.wsgi import ROUTES
from examples.app_migrations import MIGRATIONS

WSGIApp = Callable[..., Any]


def with_probes(app: WSGIApp, probes: WSGIApp) -> WSGIApp:
    """A WSGI app serving the probes' four paths and handing everything else to ``app``."""

    def dispatch(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if str(environ.get("PATH_INFO", "")).rstrip("/") in ROUTES:
            return probes(environ, start_response)
        return app(environ, start_response)

    return dispatch


def create_app(url: str | None = None) -> Flask:
    """The application: ``url`` or ``$DATABASE_URL``, migrated at boot, probes mounted at the root."""
    app = Flask(__name__)
    database = connect(url)
    migrate_db(database, MIGRATIONS)  # locked and recorded: safe in every worker at once
    flask_db = FlaskDB(app, database)  # connect before each request, close (return to the pool) after

    class File(flask_db.Model):  # type: ignore[name-defined,misc]
        name = CharField(max_length=255)
        size = IntegerField(default=0)
        source_type = CharField(max_length=128, default="")
        created_at = DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "file"
            only_save_dirty = True

    @app.post("/files")
    def add_file() -> Any:
        row = File.create(name="upload.bin", size=42, source_type="flask")
        return jsonify(id=row.id), 201

    @app.get("/files")
    def count_files() -> Any:
        return jsonify(count=File.select().count())

    app.wsgi_app = with_probes(app.wsgi_app, health_app(database, MIGRATIONS, cache_ttl=1.0))  # type: ignore[method-assign]
    return app
