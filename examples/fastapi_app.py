"""A FastAPI application under uvicorn: migrations in the lifespan, the probes as a native ASGI app.

    DATABASE_URL=postgresql://app:secret@db/app PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \\
        uvicorn --workers 2 examples.fastapi_app:app

``migrate_db_async`` runs the locked migrations in a worker thread at startup; each endpoint is a
plain ``def`` (FastAPI runs it in its thread pool) holding one pooled connection for its duration.
``health_asgi_app(..., fallback=api)`` serves ``/health/live``, ``/health/ready``, ``/health/detailed``
and ``/metrics`` at the root and passes every other request, and the lifespan, to ``api``.
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI
from peewee import CharField, DateTimeField, IntegerField, Model

from api.db import connect
from api.db.health.asgi import health_asgi_app
from api.db.migrate.aio import migrate_db_async
from examples.app_migrations import MIGRATIONS

database = connect()  # $DATABASE_URL; no connection is opened until the first query


class File(Model):
    name = CharField(max_length=255)
    size = IntegerField(default=0)
    source_type = CharField(max_length=128, default="")
    created_at = DateTimeField(default=datetime.datetime.now)

    class Meta:
        database = database
        table_name = "file"


def with_connection(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """Run a sync endpoint inside ``database.connection_context()`` (enter and exit on the same thread)."""

    @functools.wraps(endpoint)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with database.connection_context():
            return endpoint(*args, **kwargs)

    return wrapper


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Migrate before the first request; close every pooled connection at shutdown."""
    await migrate_db_async(database, MIGRATIONS)
    yield
    database.close_all()


api = FastAPI(lifespan=lifespan)


@api.post("/files", status_code=201)
@with_connection
def add_file() -> dict[str, int]:
    return {"id": File.create(name="upload.bin", size=42, source_type="fastapi").id}


@api.get("/files")
@with_connection
def count_files() -> dict[str, int]:
    return {"count": File.select().count()}


app = health_asgi_app(database, MIGRATIONS, cache_ttl=1.0, fallback=api)
