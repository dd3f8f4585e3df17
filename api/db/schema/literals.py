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
from typing import Any

from peewee import SQL

from api.db.exceptions import ConfigurationError, UnrenderableDefault

ENGINES = ("postgres", "mysql", "sqlite")


def _quote_text(text: str, engine: str, backslash_escapes: bool) -> str:
    if "\x00" in text:
        raise UnrenderableDefault("a default containing a NUL character cannot be stored as text; remove it")
    escaped = text.replace("'", "''")
    if engine == "mysql" and backslash_escapes:
        # Without NO_BACKSLASH_ESCAPES in sql_mode, MySQL reads \ as an escape inside '...'.
        escaped = escaped.replace("\\", "\\\\")
    return f"'{escaped}'"


def _number(value: float | decimal.Decimal) -> str:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UnrenderableDefault(f"default {value!r} is not a finite number; no engine stores it portably")
        return repr(value)
    if not value.is_finite():
        raise UnrenderableDefault(f"default {value!r} is not a finite number; no engine stores it portably")
    return format(value, "f")


def _datetime_text(value: datetime.datetime, engine: str) -> str:
    if value.tzinfo is not None and engine != "postgres":
        raise UnrenderableDefault(
            f"default {value!r} carries a time zone, which {engine} DATETIME columns cannot keep; "
            "convert it to a naive UTC datetime first"
        )
    return value.isoformat(sep=" ")


def render_literal(value: Any, engine: str, *, backslash_escapes: bool = True) -> str:
    """``value`` as a SQL literal for ``engine`` (``postgres``, ``mysql`` or ``sqlite``).

    ``backslash_escapes`` matters only for MySQL/MariaDB: pass False when the
    session's ``sql_mode`` contains ``NO_BACKSLASH_ESCAPES``. A peewee ``SQL``
    node is passed through unchanged: it is an expression the caller vouches for.
    """
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown engine {engine!r} for a literal; known: {', '.join(ENGINES)}")
    if isinstance(value, SQL):
        return str(value.sql)
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # before int: bool is an int subclass
        if engine == "postgres":
            return "TRUE" if value else "FALSE"
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (float, decimal.Decimal)):
        return _number(value)
    if isinstance(value, str):
        return _quote_text(value, engine, backslash_escapes)
    if isinstance(value, datetime.datetime):
        return _quote_text(_datetime_text(value, engine), engine, backslash_escapes)
    if isinstance(value, (datetime.date, datetime.time)):
        return _quote_text(value.isoformat(), engine, backslash_escapes)
    if isinstance(value, uuid.UUID):
        return _quote_text(str(value), engine, backslash_escapes)
    if isinstance(value, (bytes, bytearray, memoryview)):
        hexed = bytes(value).hex()
        if engine == "postgres":
            return f"'\\x{hexed}'::bytea" if hexed else "''::bytea"
        return f"X'{hexed}'"
    adapted = getattr(value, "adapted", None)  # psycopg2's Json wrapper, as peewee's JSONField gives it
    if isinstance(value, (dict, list)) or isinstance(adapted, (dict, list)):
        document = json.dumps(adapted if adapted is not None else value, separators=(",", ":"), sort_keys=True)
        return _quote_text(document, engine, backslash_escapes)
    raise UnrenderableDefault(
        f"cannot write a default of type {type(value).__name__} as a SQL literal; use a constant "
        "str/int/float/Decimal/bool/date/time/datetime/UUID/bytes/dict/list, or a peewee SQL('...') expression"
    )
