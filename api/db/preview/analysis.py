"""What one DDL/DML statement does to its table, per engine: the lock, the kind of work, the time.

Everything here is data and pure functions over statement text, so it is unit-testable
without a server. The sources are the engines' manuals:

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
from dataclasses import dataclass

from api.db.preview.capture import strip_statement_settings

# -- kinds of work ------------------------------------------------------------------------

CREATE = "create"  # a new object: nobody uses it yet
METADATA = "metadata"  # catalog change only
INDEX = "index"  # reads the table and builds an index
SCAN = "scan"  # reads the whole table to check something (NOT NULL, a constraint)
REWRITE = "rewrite"  # writes a new copy of the table
DATA = "data"  # INSERT / UPDATE / DELETE rows
OTHER = "other"  # not recognised: assumed to take the strongest lock

# Rough throughputs (bytes of table per second: fast server, slow server) for the range
# of estimated_duration. They are rules of thumb, not measurements of your server.
BYTES_PER_SECOND: dict[str, tuple[float, float]] = {
    INDEX: (200e6, 10e6),
    REWRITE: (100e6, 5e6),
    SCAN: (500e6, 50e6),
}
ROWS_PER_SECOND: dict[str, tuple[float, float]] = {DATA: (200_000.0, 10_000.0)}
FIXED_SECONDS = (0.001, 0.5)  # any statement: parse, catalog update, commit
BYTES_PER_ROW_GUESS = 100  # when the catalog gives rows but no bytes

# -- PostgreSQL lock modes -----------------------------------------------------------------

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
# Modes that conflict with ROW EXCLUSIVE, i.e. stop INSERT/UPDATE/DELETE while held.
PG_BLOCKS_WRITES = frozenset({SHARE, SHARE_ROW_EXCLUSIVE, "EXCLUSIVE", ACCESS_EXCLUSIVE})

# -- MySQL/MariaDB algorithms ---------------------------------------------------------------

INSTANT = "INSTANT"
INPLACE = "INPLACE"
COPY = "COPY"
# (flavour, operation) -> first version where the operation is INSTANT.
MYSQL_INSTANT_SINCE: dict[tuple[str, str], tuple[int, ...]] = {
    ("mysql", "add_column"): (8, 0, 12),
    ("mariadb", "add_column"): (10, 3, 2),
    ("mysql", "drop_column"): (8, 0, 29),
    ("mariadb", "drop_column"): (10, 4),
    ("mysql", "rename_column"): (8, 0, 28),
    ("mariadb", "rename_column"): (10, 3),
    ("mysql", "drop_index"): (99,),  # INPLACE, metadata only
    ("mariadb", "drop_index"): (10, 3),
}

MYSQL_ROW_LOCKS = "row locks"  # INSERT/UPDATE/DELETE: InnoDB locks the rows it touches
SQLITE_LOCK = "database write lock"

# Column types that need an extension: type -> (extension, what to call it).
EXTENSION_TYPES: dict[str, tuple[str, str]] = {
    "vector": ("vector", "pgvector"),
    "halfvec": ("vector", "pgvector"),
    "sparsevec": ("vector", "pgvector"),
    "bit_vector": ("vector", "pgvector"),
    "hstore": ("hstore", "hstore"),
    "citext": ("citext", "citext"),
    "ltree": ("ltree", "ltree"),
    "geometry": ("postgis", "PostGIS"),
    "geography": ("postgis", "PostGIS"),
}
_EXTENSION_TYPE = re.compile(r"\b(" + "|".join(EXTENSION_TYPES) + r")\b\s*(?:\(|\[|,|\)|$|\s+(?:NOT|NULL|DEFAULT))",
                             re.IGNORECASE)

_IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
_NAME = rf"({_IDENT}(?:\s*\.\s*{_IDENT})?)"
_VOLATILE_DEFAULT = re.compile(r"\bDEFAULT\b.*\b(?:random|gen_random_uuid|uuid_generate_v\d|clock_timestamp|"
                               r"nextval|timeofday)\s*\(", re.IGNORECASE | re.DOTALL)


def unquote(name: str) -> str:
    """The last part of a (schema-qualified, quoted) name, unquoted."""
    parts = re.findall(_IDENT, name)
    last = parts[-1] if parts else name
    if last[:1] in ('"', "`", "["):
        last = last[1:-1].replace('""', '"')
    return last


@dataclass(frozen=True)
class StatementEffect:
    """What a statement does, before looking at the table's size."""

    kind: str
    lock: str  # PostgreSQL lock mode, MySQL algorithm, or SQLite's database write lock
    blocks_writes: bool  # INSERT/UPDATE/DELETE on the table wait while it runs
    rewrites_table: bool
    table: str | None = None
    breaking: str | None = None  # drop_column, drop_table, rename_column, rename_table
    new_name: str | None = None  # the target of a rename
    concurrent_index: bool = False
    operation: str = ""  # short name: create_index, add_column...


def _pg_alter(table: str, rest: str) -> StatementEffect:
    text = rest.strip()
    up = text.upper()
    if re.match(r"RENAME\s+TO\b", up):
        new = unquote(text.split(None, 2)[2])
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, "rename_table", new, operation="rename_table")
    if re.match(r"RENAME\s+CONSTRAINT\b", up):
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, operation="rename_constraint")
    if re.match(r"RENAME\b", up):
        match = re.match(rf"RENAME\s+(?:COLUMN\s+)?{_NAME}\s+TO\s+{_NAME}", text, re.IGNORECASE)
        old, new = (unquote(match.group(1)), unquote(match.group(2))) if match else ("?", "?")
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, "rename_column", new,
                               operation=f"rename_column {old}")
    if re.match(r"DROP\s+(?:COLUMN\b|(?!CONSTRAINT\b|DEFAULT\b)\w)", up):
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, "drop_column", operation="drop_column")
    if re.match(r"DROP\s+CONSTRAINT\b", up):
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, operation="drop_constraint")
    if re.search(r"\bVALIDATE\s+CONSTRAINT\b", up):
        return StatementEffect(SCAN, SHARE_UPDATE_EXCLUSIVE, False, False, table, operation="validate_constraint")
    if re.search(r"\bFOREIGN\s+KEY\b", up):
        kind = METADATA if "NOT VALID" in up else SCAN
        return StatementEffect(kind, SHARE_ROW_EXCLUSIVE, True, False, table, operation="add_foreign_key")
    if re.match(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?(?:UNIQUE|PRIMARY\s+KEY)\b", up):
        return StatementEffect(INDEX, ACCESS_EXCLUSIVE, True, False, table, operation="add_unique")
    if re.match(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?CHECK\b", up):
        kind = METADATA if "NOT VALID" in up else SCAN
        return StatementEffect(kind, ACCESS_EXCLUSIVE, True, False, table, operation="add_check")
    if re.search(r"\bALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET\s+DATA\s+)?TYPE\b", up):
        return StatementEffect(REWRITE, ACCESS_EXCLUSIVE, True, True, table, operation="alter_column_type")
    if re.search(r"\bSET\s+NOT\s+NULL\b", up):
        return StatementEffect(SCAN, ACCESS_EXCLUSIVE, True, False, table, operation="set_not_null")
    if re.search(r"\bSET\s+(?:LOGGED|UNLOGGED|TABLESPACE)\b", up):
        return StatementEffect(REWRITE, ACCESS_EXCLUSIVE, True, True, table, operation="set_storage")
    if re.match(r"ADD\b", up):
        if re.search(r"\b(?:PRIMARY\s+KEY|UNIQUE)\b", up):
            return StatementEffect(INDEX, ACCESS_EXCLUSIVE, True, False, table, operation="add_column")
        if _VOLATILE_DEFAULT.search(text):
            return StatementEffect(REWRITE, ACCESS_EXCLUSIVE, True, True, table, operation="add_column")
        return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, operation="add_column")
    return StatementEffect(METADATA, ACCESS_EXCLUSIVE, True, False, table, operation="alter_table")


def _mysql_instant(flavour: str, version: tuple[int, ...], operation: str) -> bool:
    since = MYSQL_INSTANT_SINCE.get((flavour, operation))
    return since is not None and version >= since


def _mysql_alter(table: str, rest: str, flavour: str, version: tuple[int, ...]) -> StatementEffect:
    text = rest.strip()
    up = text.upper()
    explicit = re.search(r"\bALGORITHM\s*=?\s*(INSTANT|INPLACE|COPY|NOCOPY|DEFAULT)\b", up)
    lock_clause = re.search(r"\bLOCK\s*=?\s*(NONE|SHARED|EXCLUSIVE|DEFAULT)\b", up)

    def effect(kind: str, algorithm: str, rewrites: bool, **extra: str | None) -> StatementEffect:
        if explicit and explicit.group(1) in (INSTANT, INPLACE, COPY):
            algorithm = explicit.group(1)
        blocks = algorithm == COPY or bool(lock_clause and lock_clause.group(1) in ("SHARED", "EXCLUSIVE"))
        if algorithm == COPY:
            rewrites = True
            kind = REWRITE if kind != INDEX else kind
        return StatementEffect(kind, algorithm, blocks, rewrites, table, **extra)  # type: ignore[arg-type]

    if re.match(r"RENAME\s+(?:TO|AS)\b", up) or re.match(rf"RENAME\s+(?!COLUMN\b|INDEX\b|KEY\b){_IDENT}\s*$", up):
        new = unquote(re.sub(r"^RENAME\s+(?:TO\s+|AS\s+)?", "", text, flags=re.IGNORECASE))
        return effect(METADATA, INSTANT, False, breaking="rename_table", new_name=new, operation="rename_table")
    if re.match(r"(?:RENAME\s+COLUMN|CHANGE(?:\s+COLUMN)?)\b", up):
        match = re.match(rf"(?:RENAME\s+COLUMN|CHANGE(?:\s+COLUMN)?)\s+{_NAME}\s+(?:TO\s+)?{_NAME}", text, re.IGNORECASE)
        old, new = (unquote(match.group(1)), unquote(match.group(2))) if match else ("?", "?")
        algorithm = INSTANT if _mysql_instant(flavour, version, "rename_column") else INPLACE
        breaking = "rename_column" if old != new else None
        return effect(METADATA, algorithm, False, breaking=breaking, new_name=new, operation=f"rename_column {old}")
    if re.match(r"DROP\s+(?:INDEX|KEY)\b", up):
        algorithm = INSTANT if _mysql_instant(flavour, version, "drop_index") else INPLACE
        return effect(METADATA, algorithm, False, operation="drop_index")
    if re.match(r"DROP\s+(?:FOREIGN\s+KEY|CONSTRAINT|CHECK|PRIMARY)\b", up):
        return effect(METADATA, INPLACE, False, operation="drop_constraint")
    if re.match(r"DROP\b", up):
        if _mysql_instant(flavour, version, "drop_column"):
            return effect(METADATA, INSTANT, False, breaking="drop_column", operation="drop_column")
        return effect(REWRITE, INPLACE, True, breaking="drop_column", operation="drop_column")
    if re.match(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?FOREIGN\s+KEY\b", up):
        return effect(REWRITE, COPY, True, operation="add_foreign_key")  # INPLACE only with foreign_key_checks=0
    if re.match(r"ADD\s+(?:UNIQUE\s+|FULLTEXT\s+|SPATIAL\s+)?(?:INDEX|KEY)\b|ADD\s+(?:CONSTRAINT\s+\S+\s+)?UNIQUE\b", up):
        return effect(INDEX, INPLACE, False, operation="add_index")
    if re.match(r"ADD\s+(?:CONSTRAINT\s+\S+\s+)?PRIMARY\s+KEY\b", up):
        return effect(REWRITE, INPLACE, True, operation="add_primary_key")
    if re.match(r"ALTER\s+(?:COLUMN\s+)?\S+\s+(?:SET|DROP)\s+DEFAULT\b", up):
        return effect(METADATA, INSTANT, False, operation="column_default")
    if re.match(r"MODIFY\b", up):
        return effect(REWRITE, COPY, True, operation="alter_column_type")
    if re.match(r"ADD\b", up):
        if _mysql_instant(flavour, version, "add_column"):
            return effect(METADATA, INSTANT, False, operation="add_column")
        return effect(REWRITE, INPLACE, True, operation="add_column")
    return effect(REWRITE, COPY, True, operation="alter_table")


def _create_index(text: str, engine: str) -> StatementEffect:
    match = re.match(
        rf"CREATE\s+(?:UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{_IDENT}\s+)?ON\s+(?:ONLY\s+)?{_NAME}",
        text,
        re.IGNORECASE,
    )
    table = unquote(match.group(2)) if match else None
    concurrent = bool(match and match.group(1))
    if engine == "postgres":
        lock = SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE
        return StatementEffect(INDEX, lock, not concurrent, False, table, concurrent_index=concurrent,
                               operation="create_index")
    if engine == "mysql":
        copy = bool(re.search(r"\bALGORITHM\s*=?\s*COPY\b", text, re.IGNORECASE))
        return StatementEffect(INDEX, COPY if copy else INPLACE, copy, copy, table,
                               concurrent_index=not copy, operation="create_index")
    return StatementEffect(INDEX, SQLITE_LOCK, True, False, table, operation="create_index")


def analyze_statement(
    sql: str, engine: str, *, flavour: str = "", version: tuple[int, ...] = ()
) -> StatementEffect:
    """The effect of one statement on ``engine`` (postgres, mysql, sqlite)."""
    text = strip_statement_settings(sql).strip()
    up = text.upper()
    sqlite = engine == "sqlite"

    def simple(kind: str, pg_lock: str, table: str | None, *, rewrites: bool = False, **extra: str | None) -> StatementEffect:
        if sqlite:
            return StatementEffect(kind, SQLITE_LOCK, True, rewrites, table, **extra)  # type: ignore[arg-type]
        if engine == "mysql":
            if kind == DATA:
                return StatementEffect(kind, MYSQL_ROW_LOCKS, False, False, table, **extra)  # type: ignore[arg-type]
            algorithm = COPY if rewrites else (INPLACE if kind in (INDEX, SCAN) else INSTANT)
            return StatementEffect(kind, algorithm, rewrites, rewrites, table, **extra)  # type: ignore[arg-type]
        return StatementEffect(kind, pg_lock, pg_lock in PG_BLOCKS_WRITES, rewrites, table, **extra)  # type: ignore[arg-type]

    if re.match(r"CREATE\s+(?:UNIQUE\s+)?INDEX\b", up):
        return _create_index(text, engine)
    if re.match(r"DROP\s+INDEX\b", up):
        concurrent = bool(re.match(r"DROP\s+INDEX\s+CONCURRENTLY\b", up))
        on = re.search(rf"\bON\s+{_NAME}", text, re.IGNORECASE)
        table = unquote(on.group(1)) if on else None
        if engine == "postgres":
            lock = SHARE_UPDATE_EXCLUSIVE if concurrent else ACCESS_EXCLUSIVE
            return StatementEffect(METADATA, lock, not concurrent, False, table, operation="drop_index")
        return simple(METADATA, ACCESS_EXCLUSIVE, table, operation="drop_index")
    match = re.match(rf"CREATE\s+(?:(?:GLOBAL\s+|LOCAL\s+)?(?:TEMP|TEMPORARY|UNLOGGED)\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?{_NAME}",
                     text, re.IGNORECASE)
    if match:
        table = unquote(match.group(1))
        if re.search(r"\bAS\s+SELECT\b|\bAS\s*\(\s*SELECT\b", up):
            source = re.search(rf"\bFROM\s+{_NAME}", text, re.IGNORECASE)
            return simple(REWRITE, ACCESS_EXCLUSIVE if not source else "ACCESS SHARE", unquote(source.group(1)) if source
                          else table, rewrites=True, operation="create_table_as")
        return StatementEffect(CREATE, "none (new table)", False, False, table, operation="create_table")
    match = re.match(rf"DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}", text, re.IGNORECASE)
    if match:
        return simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), breaking="drop_table", operation="drop_table")
    match = re.match(rf"RENAME\s+TABLE\s+{_NAME}\s+TO\s+{_NAME}", text, re.IGNORECASE)
    if match:
        return simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), breaking="rename_table",
                      new_name=unquote(match.group(2)), operation="rename_table")
    match = re.match(rf"ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}\s+(.*)$", text, re.IGNORECASE | re.DOTALL)
    if match:
        table, rest = unquote(match.group(1)), match.group(2)
        if engine == "postgres":
            return _pg_alter(table, rest)
        if engine == "mysql":
            return _mysql_alter(table, rest, flavour, version)
        effect = _pg_alter(table, rest)  # SQLite: same forms, one database-wide lock
        rewrites = effect.breaking == "drop_column"  # SQLite rewrites every row to drop a column
        return StatementEffect(REWRITE if rewrites else effect.kind, SQLITE_LOCK, True, rewrites, table,
                               effect.breaking, effect.new_name, operation=effect.operation)
    match = re.match(rf"INSERT\s+(?:OR\s+\w+\s+|IGNORE\s+)?INTO\s+{_NAME}", text, re.IGNORECASE)
    if match:
        source = re.search(rf"\bSELECT\b.*?\bFROM\s+{_NAME}", text, re.IGNORECASE | re.DOTALL)
        if source:  # a copy: its time follows the source table's size
            return simple(REWRITE, ROW_EXCLUSIVE, unquote(source.group(1)), rewrites=True, operation="copy_rows")
        return simple(DATA, ROW_EXCLUSIVE, unquote(match.group(1)), operation="insert")
    match = re.match(rf"(?:UPDATE|DELETE\s+FROM)\s+(?:ONLY\s+)?{_NAME}", text, re.IGNORECASE)
    if match:
        return simple(DATA, ROW_EXCLUSIVE, unquote(match.group(1)), operation=up.split()[0].lower())
    match = re.match(rf"TRUNCATE\s+(?:TABLE\s+)?{_NAME}", text, re.IGNORECASE)
    if match:
        return simple(METADATA, ACCESS_EXCLUSIVE, unquote(match.group(1)), operation="truncate")
    if re.match(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\b", up):
        on = re.search(rf"\bON\s+{_NAME}", text, re.IGNORECASE)
        return simple(METADATA, SHARE_ROW_EXCLUSIVE, unquote(on.group(1)) if on else None, operation="create_trigger")
    if re.match(r"(?:CREATE|DROP|ALTER|COMMENT|GRANT|REVOKE)\b", up):
        return StatementEffect(METADATA, "none on tables", False, False, None, operation=" ".join(up.split()[:2]).lower())
    return simple(OTHER, ACCESS_EXCLUSIVE, None, operation="other")


_PG_ALTER_TYPE = re.compile(
    rf"ALTER\s+TABLE\s+.*?\bALTER\s+(?:COLUMN\s+)?{_NAME}\s+(?:SET\s+DATA\s+)?TYPE\s+"
    r"([A-Za-z][\w ]*?)\s*(?:\(\s*(\d+)\s*\))?\s*(USING\b.*|COLLATE\b.*)?;?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_PG_VARCHAR = frozenset({"varchar", "character varying"})


def pg_type_change(sql: str) -> tuple[str, str, int | None, bool] | None:
    """(column, new type, new length, has USING) of an ``ALTER COLUMN ... TYPE``; None if not one."""
    match = _PG_ALTER_TYPE.match(strip_statement_settings(sql).strip())
    if not match:
        return None
    length = int(match.group(3)) if match.group(3) else None
    using = bool(match.group(4) and match.group(4).upper().startswith("USING"))
    return unquote(match.group(1)), " ".join(match.group(2).lower().split()), length, using


def pg_binary_coercible(old_type: str, old_length: int | None, new_type: str, new_length: int | None) -> bool:
    """True when PostgreSQL changes the type without rewriting the table (catalog only).

    Widening a VARCHAR, VARCHAR to TEXT and TEXT to unbounded VARCHAR are binary-coercible
    (ALTER TABLE's notes); the same type and length is a no-op.
    """
    old, new = old_type.lower(), new_type.lower()
    if old in _PG_VARCHAR and new in _PG_VARCHAR:
        return new_length is None or (old_length is not None and new_length >= old_length)
    if old in _PG_VARCHAR and new == "text":
        return True
    if old == "text" and new in _PG_VARCHAR:
        return new_length is None
    return old == new and old_length == new_length


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
