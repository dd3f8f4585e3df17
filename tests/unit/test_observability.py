"""Structured log fields, the JSON formatter, pool events and spans without a server."""

from __future__ import annotations

import json
import logging
import sys

import peewee
import pytest

from api.db.logfields import FIELDS, FieldsFilter, JsonFormatter, configure_logging, extra_fields
from api.db.pool.events import EVENT_KINDS, PoolEvent, add_pool_listener, emit
from api.db.redact import register_secret
from api.db.tracing import NO_SPAN, db_attributes, span


def _record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("api.db.test", logging.INFO, __file__, 1, msg, args, None)
    record.__dict__.update(extra)
    return record


def test_the_subject_is_derived_from_the_first_argument() -> None:
    record = _record("pool %s: a connection dropped by the server was replaced", "postgresql://u:***@h/db")
    FieldsFilter().filter(record)
    assert extra_fields(record) == {"pool": "postgresql://u:***@h/db"}
    record = _record("migration %s applied in %.1f ms", "0001_x", 1.0)
    FieldsFilter().filter(record)
    assert record.__dict__["migration"] == "0001_x"
    passed = _record("migration %s applied", "0001_x", migration="given")
    FieldsFilter().filter(passed)
    assert passed.__dict__["migration"] == "given", "a field the call site passed is kept"


def test_text_fields_are_redacted() -> None:
    register_secret("fieldsecret-42")
    record = _record("x", reason="failed with fieldsecret-42 inside")
    FieldsFilter().filter(record)
    assert "fieldsecret-42" not in record.__dict__["reason"]


def test_json_formatter_writes_the_fields_and_the_exception() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        info = sys.exc_info()
        record = logging.LogRecord("api.db.x", logging.ERROR, __file__, 1, "failed %s", ("it",), info)
    record.__dict__.update({"migration": "0001", "duration_ms": 1.5, "migrations": ("a", "b")})
    data = json.loads(JsonFormatter().format(record))
    assert data["message"] == "failed it" and data["level"] == "ERROR" and data["logger"] == "api.db.x"
    assert data["migration"] == "0001" and data["duration_ms"] == 1.5 and data["migrations"] == ["a", "b"]
    assert "ValueError: boom" in data["exception"]


def test_documented_fields_cover_the_names_the_issue_names() -> None:
    assert {"migration", "status", "duration_ms", "pool", "utilization", "wait_ms", "engine"} <= set(FIELDS)


def test_configure_logging_rejects_an_unknown_format() -> None:
    with pytest.raises(ValueError):
        configure_logging(logging.INFO, "xml")


def test_events_without_listeners_and_with_one() -> None:
    db = peewee.SqliteDatabase(":memory:")
    emit(db, "checked_out", object(), wait=0.1)  # no state, no listener: nothing happens
    seen: list[PoolEvent] = []
    remove = add_pool_listener(db, seen.append)
    emit(db, "checked_out", object(), wait=0.25)
    remove()
    emit(db, "checked_in")
    assert [e.kind for e in seen] == ["checked_out"] and seen[0].wait_seconds == 0.25
    assert set(seen[0].to_dict()) == {"kind", "pool", "connection", "wait_seconds", "reason", "timestamp"}
    assert "acquire_timeout" in EVENT_KINDS
    with pytest.raises(TypeError):
        add_pool_listener(db, "not callable")  # type: ignore[arg-type]


def test_span_facts_of_a_sqlite_database() -> None:
    db = peewee.SqliteDatabase("/tmp/some/app.db")
    assert db_attributes(db) == {"db.system": "sqlite", "db.namespace": "app.db"}
    assert db_attributes(None) == {}


def test_span_without_a_provider_is_harmless() -> None:
    with span("nothing") as handle:
        handle.set("key", "value")
        handle.event("e", {"a": 1})
    assert NO_SPAN.recording is False
