"""OpenTelemetry spans of migrations, previews, preflight and checkouts, from the SDK's in-memory exporter."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402

from api.db import connect, get_extended_diagnostics, migrate_db, preview_migration  # noqa: E402
from api.db.exceptions import MigrationError, PoolTimeout  # noqa: E402
from api.db.pool.events import trace_checkouts  # noqa: E402
from api.db.redact import register_secret  # noqa: E402
from api.db.tracing import set_tracer_provider  # noqa: E402

from engines import Engine  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
SECRET = "Tr4ce-s3cret pw"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """api.db's spans go to an in-memory exporter for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        set_tracer_provider(None)
        provider.shutdown()


def _close(database: Any) -> None:
    getattr(database, "close_all", database.close)()


def _table(n: int) -> Any:
    def migration(m: Any) -> None:
        m.sql(f"CREATE TABLE traced_{n} (id INTEGER PRIMARY KEY)")

    return migration


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {span.name: span for span in finished}


def _children(finished: tuple[ReadableSpan, ...], parent: ReadableSpan) -> list[str]:
    assert parent.context is not None
    return [s.name for s in finished if s.parent is not None and s.parent.span_id == parent.context.span_id]


def test_five_migrations_give_the_documented_span_tree(
    db_url: str, engine: Engine, spans: InMemorySpanExporter
) -> None:
    database: Any = connect(db_url, environ={})
    migrations = [(f"000{n}_traced", _table(n)) for n in range(1, 6)]
    try:
        report = migrate_db(database, migrations)
        assert len(report.applied) == 5
        finished = spans.get_finished_spans()
        named = _by_name(finished)
        run = named["migrate_db"]
        assert run.parent is None and run.status.status_code is StatusCode.UNSET
        expected = ["migration_lock"] + [f"migration 000{n}_traced" for n in range(1, 6)]
        assert _children(finished, run) == expected
        system = {"sqlite": "sqlite", "postgres": "postgresql", "mysql": "mysql"}[engine.family]
        for span in finished:
            attributes = dict(span.attributes or {})
            assert attributes["db.system"] == system, span.name
            assert attributes["db.namespace"]
            if engine.family != "sqlite":
                assert attributes["server.address"] == urlsplit(db_url).hostname
        run_attributes = dict(run.attributes or {})
        assert run_attributes["db.operation.name"] == "migrate"
        assert run_attributes["api_db.migrations.applied"] == 5
        assert run_attributes["api_db.migrations.failed"] == 0
        lock = dict(named["migration_lock"].attributes or {})
        assert lock["api_db.lock.strategy"] in ("pg_advisory_lock", "get_lock", "begin_immediate")
        assert float(lock["api_db.lock.wait_ms"]) >= 0
        first = dict(named["migration 0001_traced"].attributes or {})
        assert first["api_db.migration.name"] == "0001_traced"
        assert first["api_db.migration.status"] == "success"
        assert first["api_db.migration.operations"] == 1 and int(first["api_db.migration.statements"]) >= 1
        spans.clear()
        migrate_db(database, migrations)  # the fast path: one span, no lock
        again = spans.get_finished_spans()
        assert [s.name for s in again] == ["migrate_db"]
        assert dict(again[0].attributes or {})["api_db.migrations.fast_path"] is True
    finally:
        _close(database)


def _with_password(url: str, engine: Engine) -> str:
    if engine.family != "postgres":  # only the local PostgreSQL ignores a password it is given (trust)
        register_secret(SECRET)
        return url
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0].split(":")[0]
    netloc = f"{user}:{quote(SECRET, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _texts(span: ReadableSpan) -> list[str]:
    """Every text a span exports: attribute values, event attributes, the status description."""
    texts = [str(v) for v in (span.attributes or {}).values()]
    for event in span.events:
        texts.extend(str(v) for v in (event.attributes or {}).values())
    texts.append(span.status.description or "")
    return texts


def test_a_failing_migration_marks_its_span_and_the_run_without_the_password(
    db_url: str, engine: Engine, spans: InMemorySpanExporter
) -> None:
    url = _with_password(db_url, engine)
    database: Any = connect(url, environ={})
    broken = lambda m: m.sql(f"SELECT nope FROM missing_table WHERE note = '{SECRET}'")  # noqa: E731
    migrations = [("0001_ok", _table(1)), ("0002_ok", _table(2)), ("0003_broken", broken)]
    try:
        with pytest.raises(MigrationError):
            migrate_db(database, migrations)
    finally:
        _close(database)
    finished = spans.get_finished_spans()
    named = _by_name(finished)
    failed = named["migration 0003_broken"]
    assert failed.status.status_code is StatusCode.ERROR
    assert dict(failed.attributes or {})["api_db.migration.status"] == "failed"
    assert any(e.name == "exception" for e in failed.events)
    run = named["migrate_db"]
    assert run.status.status_code is StatusCode.ERROR and "MigrationError" in (run.status.description or "")
    assert named["migration 0001_ok"].status.status_code is StatusCode.UNSET
    for span in finished:
        for text in _texts(span):
            assert SECRET not in text and quote(SECRET, safe="") not in text, span.name
            assert "s3cret" not in text, span.name


def test_preview_and_preflight_have_a_span_each(db_url: str, spans: InMemorySpanExporter) -> None:
    database: Any = connect(db_url, environ={})
    try:
        preview_migration(database, [("0001_previewed", _table(1))])
        report = get_extended_diagnostics(database)
    finally:
        _close(database)
    named = _by_name(spans.get_finished_spans())
    preview = dict(named["preview_migration"].attributes or {})
    assert preview["db.operation.name"] == "preview" and int(preview["api_db.preview.statements"]) >= 1
    preflight = dict(named["preflight"].attributes or {})
    assert preflight["api_db.preflight.ok"] is report.ok and preflight["db.operation.name"] == "preflight"


@pytest.mark.engines("postgres", "mysql")
def test_checkout_tracing_and_the_acquire_timeout_event(db_url: str, spans: InMemorySpanExporter) -> None:
    database: Any = connect(db_url, environ={}, min_connections=0, max_connections=1, acquire_timeout=0.2)
    try:
        with database.connection_context():
            database.execute_sql("SELECT 1")
        assert not spans.get_finished_spans(), "checkouts are not traced by default"
        stop = trace_checkouts(database)
        with database.connection_context():
            database.execute_sql("SELECT 1")
        checkouts = [s for s in spans.get_finished_spans() if s.name == "api_db.pool.checkout"]
        assert len(checkouts) == 1 and float(dict(checkouts[0].attributes or {})["api_db.pool.wait_ms"]) >= 0
        stop()
        ready, release = threading.Event(), threading.Event()

        def hold() -> None:
            with database.connection_context():
                ready.set()
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        assert ready.wait(10)
        from api.db.tracing import span

        try:
            with span("request"), pytest.raises(PoolTimeout):
                database.connect()
        finally:
            release.set()
            holder.join(10)
        request = _by_name(spans.get_finished_spans())["request"]
        events = [e for e in request.events if e.name == "api_db.pool.acquire_timeout"]
        assert len(events) == 1 and float(dict(events[0].attributes or {})["api_db.pool.wait_ms"]) == 200.0
    finally:
        database.close_all()


_BLOCKED = textwrap.dedent(
    """
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name == "opentelemetry" or name.startswith("opentelemetry."):
                raise ImportError("blocked: " + name)
            return None

    sys.meta_path.insert(0, Block())
    from api.db import connect, migrate_db, preview_migration
    from api.db.pool.events import add_pool_listener, trace_checkouts
    db = connect(sys.argv[1], environ={})
    seen = []
    add_pool_listener(db, seen.append)
    trace_checkouts(db)
    preview_migration(db, [("0001_plain", lambda m: m.sql("CREATE TABLE plain_t (id INTEGER)"))])
    report = migrate_db(db, [("0001_plain", lambda m: m.sql("CREATE TABLE plain_t (id INTEGER)"))])
    assert report.applied == ["0001_plain"], report.applied
    assert seen, "hooks work without opentelemetry"
    assert not [m for m in sys.modules if m.startswith("opentelemetry")], "opentelemetry was imported"
    print("ok")
    """
)


@pytest.mark.engines("sqlite")
def test_without_opentelemetry_nothing_is_imported_and_nothing_changes(db_url: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _BLOCKED, db_url], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
