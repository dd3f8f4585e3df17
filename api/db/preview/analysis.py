"""What one DDL/DML statement does to its table, per engine: the lock, the kind of work, the time.

Everything here is data and pure functions over statement text, so it is unit-testable
without a server. The statement forms common to all engines are here; what differs (the
lock a form takes, the ALTER TABLE tables) is in each engine's previews section
(``api/db/engines/``). The sources are the engines' manuals:

* PostgreSQL "Explicit Locking" (table-level lock modes per command) and ALTER TABLE's
  notes on which forms rewrite the table (a volatile default, a type change that is
  not binary-coercible, SET LOGGED/UNLOGGED) or scan it (SET NOT NULL, a validated
  constraint).
* MySQL 8.0 / MariaDB "Online DDL operations": the ALGORITHM each ALTER TABLE form
  can use (INSTANT: metadata only; INPLACE: no table copy, concurrent DML allowed,
  sometimes a rebuild; COPY: the table is copied and writes wait).
* SQLite: every write takes the database-wide write lock.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from api.db.engines import engine_named
from api.db.engines.base import Engine
from api.db.engines.postgres import EXTENSION_TYPES, PostgresEngine
from api.db.engines.statements import (
    ACCESS_EXCLUSIVE,
    BYTES_PER_ROW_GUESS,
    CREATE,
    DATA,
    IDENT,
    INDEX,
    METADATA,
    NAME,
    OTHER,
    REWRITE,
    ROW_EXCLUSIVE,
    SCAN,
    SHARE_ROW_EXCLUSIVE,
    StatementEffect,
    unquote,
)
from api.db.preview.capture import strip_statement_settings

# Rough throughputs (bytes of table per second: fast server, slow server) for the range
# of estimated_duration. They are rules of thumb, not measurements of your server.
BYTES_PER_SECOND: dict[str, tuple[float, float]] = {
    INDEX: (200e6, 10e6),
    REWRITE: (100e6, 5e6),
    SCAN: (500e6, 50e6),
}
ROWS_PER_SECOND: dict[str, tuple[float, float]] = {DATA: (200_000.0, 10_000.0)}
FIXED_SECONDS = (0.001, 0.5)  # any statement: parse, catalog update, commit

_EXTENSION_TYPE = re.compile(
    r"\b(" + "|".join(EXTENSION_TYPES) + r")\b\s*(?:\(|\[|,|\)|$|\s+(?:NOT|NULL|DEFAULT))", re.IGNORECASE
)
_ALL = re.IGNORECASE | re.DOTALL


@dataclass(frozen=True)
class _Statement:
    """One statement to analyse, with the engine (and its flavour and version) it runs on."""

    text: str  # without leading comments and MariaDB's SET STATEMENT prefix
    up: str  # the text upper-cased, for the patterns written in capitals
    engine: type[Engine]
    flavour: str
    version: tuple[int, ...]

    def search(self, pattern: str, flags: int = re.IGNORECASE) -> re.Match[str] | None:
        return re.search(pattern, self.text, flags)

    def simple(self, kind: str, pg_lock: str, table: str | None, *, rewrites: bool = False,
               **extra: str | None) -> StatementEffect:
        """The effect of a statement that takes ``pg_lock`` on PostgreSQL, in this engine's terms."""
        lock, blocks, rewrites = self.engine.statement_lock(kind, pg_lock, rewrites)
        return StatementEffect(kind, lock, blocks, rewrites, table, **extra)  # type: ignore[arg-type]


def _create_index(s: _Statement) -> StatementEffect | None:
    if not re.match(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b", s.up):
        return None
    match = re.match(rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
                     rf"(?:{IDENT}\s+)?ON\s+(?:ONLY\s+)?{NAME}", s.text, re.IGNORECASE)
    table = unquote(match.group(2)) if match else None
    lock, blocks, rewrites, concurrent = s.engine.index_build(bool(match and match.group(1)), s.text)
    return StatementEffect(INDEX, lock, blocks, rewrites, table, concurrent_index=concurrent,
                           operation="create_index")


def _drop_index(s: _Statement) -> StatementEffect | None:
    if not re.match(r"DROP\s+INDEX\b", s.up):
        return None
    on = s.search(rf"\bON\s+{NAME}")
    lock, blocks, rewrites = s.engine.drop_index(bool(re.match(r"DROP\s+INDEX\s+CONCURRENTLY\b", s.up)))
    return StatementEffect(METADATA, lock, blocks, rewrites, unquote(on.group(1)) if on else None,
                           operation="drop_index")


def _create_table(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+"
                     rf"(?:IF\s+NOT\s+EXISTS\s+)?{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    table = unquote(match.group(1))
    if not re.search(r"\bAS\s+SELECT\b|\bAS\s*\(\s*SELECT\b", s.up):
        return StatementEffect(CREATE, "none (new table)", False, False, table, operation="create_table")
    source = s.search(rf"\bFROM\s+{NAME}")
    if source is None:
        return s.simple(REWRITE, ACCESS_EXCLUSIVE, table, rewrites=True, operation="create_table_as")
    return s.simple(REWRITE, "ACCESS SHARE", unquote(source.group(1)), rewrites=True,
                    operation="create_table_as")


def _drop_table(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    return s.simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), breaking="drop_table",
                    operation="drop_table")


def _rename_table(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"RENAME\s+TABLE\s+{NAME}\s+TO\s+{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    return s.simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), breaking="rename_table",
                    new_name=unquote(match.group(2)), operation="rename_table")


def _alter_table(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{NAME}\s+(.*)$", s.text, _ALL)
    if not match:
        return None
    return s.engine.alter_effect(unquote(match.group(1)), match.group(2), s.flavour, s.version)


def _insert(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"INSERT\s+(?:OR\s+\w+\s+|IGNORE\s+)?INTO\s+{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    source = s.search(rf"\bSELECT\b.*?\bFROM\s+{NAME}", _ALL)
    if source:  # a copy: its time follows the source table's size
        table = unquote(source.group(1))
        return s.simple(REWRITE, ROW_EXCLUSIVE, table, rewrites=True, operation="copy_rows")
    return s.simple(DATA, ROW_EXCLUSIVE, unquote(match.group(1)), operation="insert")


def _update_delete(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"(?:UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    return s.simple(DATA, ROW_EXCLUSIVE, unquote(match.group(1)), operation=s.up.split()[0].lower())


def _truncate(s: _Statement) -> StatementEffect | None:
    match = re.match(rf"TRUNCATE\s+(?:TABLE\s+)?{NAME}", s.text, re.IGNORECASE)
    if not match:
        return None
    return s.simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), operation="truncate")


def _create_trigger(s: _Statement) -> StatementEffect | None:
    if not re.match(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\b", s.up):
        return None
    on = s.search(rf"\bON\s+{NAME}")
    table = unquote(on.group(1)) if on else None
    return s.simple(METADATA, SHARE_ROW_EXCLUSIVE, table, operation="create_trigger")


def _other_ddl(s: _Statement) -> StatementEffect | None:
    if not re.match(r"(?:CREATE|DROP|ALTER|COMMENT|GRANT|REVOKE)\b", s.up):
        return None
    operation = " ".join(s.up.split()[:2]).lower()
    return StatementEffect(METADATA, "none on tables", False, False, None, operation=operation)


# The statement forms, first match wins; a statement none of them knows takes the strongest lock.
_READERS: tuple[Callable[[_Statement], StatementEffect | None], ...] = (
    _create_index, _drop_index, _create_table, _drop_table, _rename_table, _alter_table,
    _insert, _update_delete, _truncate, _create_trigger, _other_ddl,
)


def analyze_for(
    engine: type[Engine], sql: str, *, flavour: str = "", version: tuple[int, ...] = ()
) -> StatementEffect:
    """The effect of one statement on ``engine`` (an Engine class), its ``flavour`` at ``version``."""
    text = strip_statement_settings(sql).strip()
    statement = _Statement(text, text.upper(), engine, flavour, version)
    for reader in _READERS:
        effect = reader(statement)
        if effect is not None:
            return effect
    return statement.simple(OTHER, ACCESS_EXCLUSIVE, None, operation="other")


def analyze_statement(
    sql: str, engine: str, *, flavour: str = "", version: tuple[int, ...] = ()
) -> StatementEffect:
    """The effect of one statement on ``engine`` (postgres, mysql, sqlite)."""
    return analyze_for(engine_named(engine), sql, flavour=flavour, version=version)


def pg_type_change(sql: str) -> tuple[str, str, int | None, bool] | None:
    """(column, new type, new length, has USING) of an ``ALTER COLUMN ... TYPE``; None if not one."""
    return PostgresEngine.type_change(strip_statement_settings(sql).strip())


def pg_binary_coercible(old_type: str, old_length: int | None, new_type: str, new_length: int | None) -> bool:
    """True when PostgreSQL changes the type without rewriting the table (catalog only)."""
    return PostgresEngine.binary_coercible(old_type, old_length, new_type, new_length)


def extension_types(sql: str) -> list[str]:
    """Column types in ``sql`` that need an extension (``vector``, ``halfvec``, ``hstore``...)."""
    text = strip_statement_settings(sql)
    if not re.match(r"(?:CREATE\s+TABLE|ALTER\s+TABLE)\b", text, re.IGNORECASE):
        return []
    return sorted({m.group(1).lower() for m in _EXTENSION_TYPE.finditer(text)})


@dataclass(frozen=True)
class DurationRange:
    """A duration as a range in seconds, with what it was computed from."""

    low_seconds: float
    high_seconds: float
    basis: str

    def __str__(self) -> str:
        return f"{format_seconds(self.low_seconds)} - {format_seconds(self.high_seconds)}"

    def to_dict(self) -> dict[str, object]:
        return {"low_seconds": round(self.low_seconds, 6), "high_seconds": round(self.high_seconds, 6),
                "basis": self.basis}


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def format_bytes(count: int | None) -> str:
    if count is None:
        return "?"
    value = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def estimate_duration(kind: str, rows: int | None, size_bytes: int | None) -> DurationRange:
    """The time one statement of ``kind`` takes on a table of ``rows`` / ``size_bytes``."""
    low, high = FIXED_SECONDS
    if kind in BYTES_PER_SECOND:
        fast, slow = BYTES_PER_SECOND[kind]
        volume = size_bytes if size_bytes is not None else (rows or 0) * BYTES_PER_ROW_GUESS
        guessed = " (bytes guessed from rows)" if size_bytes is None and rows else ""
        basis = (f"{kind} over {format_bytes(volume)}{guessed}, {rows if rows is not None else '?'} rows, "
                 f"at {fast / 1e6:g}-{slow / 1e6:g} MB/s")
        return DurationRange(low + volume / fast, high + volume / slow, basis)
    if kind in ROWS_PER_SECOND:
        fast, slow = ROWS_PER_SECOND[kind]
        count = rows or 0
        return DurationRange(low + count / fast, high + count / slow,
                             f"{kind} on up to {count} rows at {slow:g}-{fast:g} rows/s")
    return DurationRange(low, high, f"{kind}: catalog change only, independent of the table size")
