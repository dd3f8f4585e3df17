"""Constant column defaults written as SQL literals, safely, for each engine.

A ``DEFAULT`` clause in DDL cannot take a bound parameter, so the value must be
spelled out. ``render_literal`` accepts only constants it knows how to quote
(strings, numbers, booleans, dates and times, UUIDs, bytes, JSON documents) and
raises :class:`UnrenderableDefault` for anything else rather than guess.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

from peewee import SQL

from api.db.engines import ENGINE_NAMES, Engine
from api.db.exceptions import ConfigurationError, UnrenderableDefault

ENGINES = tuple(ENGINE_NAMES)


def _quote_text(text: str, engine: type[Engine], backslash_escapes: bool) -> str:
    if "\x00" in text:
        raise UnrenderableDefault("a default containing a NUL character cannot be stored as text; remove it")
    escaped = text.replace("'", "''")
    if engine.literal_backslash_escapes and backslash_escapes:
        escaped = escaped.replace("\\", "\\\\")
    return f"'{escaped}'"


def _number(value: float | decimal.Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrenderableDefault(
                f"default {value!r} is not a finite number; no engine stores it portably"
            )
        return repr(value)
    if not value.is_finite():
        raise UnrenderableDefault(f"default {value!r} is not a finite number; no engine stores it portably")
    return format(value, "f")


def _datetime_text(value: datetime.datetime, engine: type[Engine]) -> str:
    if value.tzinfo is not None and not engine.literal_keeps_timezone:
        raise UnrenderableDefault(
            f"default {value!r} carries a time zone, which {engine.name} DATETIME columns cannot keep; "
            "convert it to a naive UTC datetime first"
        )
    return value.isoformat(sep=" ")


def _json_document(value: Any) -> Any:
    """The dict or list ``value`` is or wraps (psycopg2's Json, as peewee's JSONField gives it), else None."""
    adapted = getattr(value, "adapted", None)
    if isinstance(value, (dict, list)) or isinstance(adapted, (dict, list)):
        return adapted if adapted is not None else value
    return None


Renderer = Callable[[Any, type[Engine], bool], str]

# Checked in order: bool before int (a subclass), datetime before date (a subclass).
RENDERERS: tuple[tuple[type | tuple[type, ...], Renderer], ...] = (
    (SQL, lambda v, e, b: str(v.sql)),
    (type(None), lambda v, e, b: "NULL"),
    (bool, lambda v, e, b: e.literal_booleans[1] if v else e.literal_booleans[0]),
    (int, lambda v, e, b: str(v)),
    ((float, decimal.Decimal), lambda v, e, b: _number(v)),
    (str, lambda v, e, b: _quote_text(v, e, b)),
    (datetime.datetime, lambda v, e, b: _quote_text(_datetime_text(v, e), e, b)),
    ((datetime.date, datetime.time), lambda v, e, b: _quote_text(v.isoformat(), e, b)),
    (uuid.UUID, lambda v, e, b: _quote_text(str(v), e, b)),
    ((bytes, bytearray, memoryview), lambda v, e, b: e.literal_bytes(bytes(v).hex())),
)


def _engine_named(engine: str) -> type[Engine]:
    if engine not in ENGINE_NAMES:
        raise ConfigurationError(f"unknown engine {engine!r} for a literal; known: {', '.join(ENGINES)}")
    return ENGINE_NAMES[engine]


def render_literal(value: Any, engine: str, *, backslash_escapes: bool = True) -> str:
    """``value`` as a SQL literal for ``engine`` (``postgres``, ``mysql`` or ``sqlite``).

    ``backslash_escapes`` matters only for MySQL/MariaDB: pass False when the
    session's ``sql_mode`` contains ``NO_BACKSLASH_ESCAPES``. A peewee ``SQL``
    node is passed through unchanged: it is an expression the caller vouches for.
    """
    engine_class = _engine_named(engine)
    for types, render in RENDERERS:
        if isinstance(value, types):
            return render(value, engine_class, backslash_escapes)
    document = _json_document(value)
    if document is not None:
        text = json.dumps(document, separators=(",", ":"), sort_keys=True)
        return _quote_text(text, engine_class, backslash_escapes)
    raise UnrenderableDefault(
        f"cannot write a default of type {type(value).__name__} as a SQL literal; use a constant "
        "str/int/float/Decimal/bool/date/time/datetime/UUID/bytes/dict/list, "
        "or a peewee SQL('...') expression"
    )
