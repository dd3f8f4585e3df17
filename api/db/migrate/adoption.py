"""Adoption proven by the catalog: is an operation's effect already in the database?

An "already exists" / "does not exist" error is evidence, never the verdict: an operation
counts as already in effect only when introspection confirms what it would have done
(the column with a compatible type and nullability, an index on those columns with the
same uniqueness, the table, the object named by a raw statement). Every check reads
peewee's introspection (``get_columns``, ``get_indexes``, ``get_foreign_keys``,
``table_exists``), which answers per engine; nothing here knows an engine by name. The
catalog is read after the operation's savepoint was rolled back, so it shows what stays:
a rollback that removed a column just added can never be taken for "already there".

peewee's ``get_columns`` gives a column's base type name and nullability only: no
length, precision, array element type or user-defined type name (PostgreSQL says
``ARRAY`` / ``USER-DEFINED``, MariaDB ``longtext`` for JSON), and playhouse.reflection
maps those same names to field classes, falling back to ``UnknownField``. So types are
compared by family (text, integer, decimal, time, binary, json, uuid, array), not exactly.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import peewee
from playhouse.migrate import make_index_name

from api.db.engines import engine_for
from api.db.error_handler import ALREADY_ABSENT, ALREADY_PRESENT, classify_error, describe
from api.db.exceptions import SchemaConflict
from api.db.migrate.sqltext import strip_leading_comments

logger = logging.getLogger(__name__)

# The first word of a column type, lower-cased, to its family. A type not listed is its own family.
TYPE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        (
            "char",
            "varchar",
            "character",
            "text",
            "tinytext",
            "mediumtext",
            "longtext",
            "clob",
            "nchar",
            "nvarchar",
            "string",
            "citext",
            "enum",
            "set",
        ),
        "text",
    ),
    **dict.fromkeys(
        (
            "int",
            "integer",
            "smallint",
            "bigint",
            "tinyint",
            "mediumint",
            "serial",
            "bigserial",
            "smallserial",
            "int2",
            "int4",
            "int8",
            "bool",
            "boolean",
            "bit",
        ),
        "integer",
    ),
    **dict.fromkeys(("decimal", "numeric", "real", "float", "float4", "float8", "double"), "decimal"),
    **dict.fromkeys(
        ("datetime", "timestamp", "timestamptz", "date", "time", "timetz", "interval", "year"), "time"
    ),
    **dict.fromkeys(
        ("blob", "tinyblob", "mediumblob", "longblob", "bytea", "binary", "varbinary"), "binary"
    ),
    **dict.fromkeys(("json", "jsonb"), "json"),
    "uuid": "uuid",
    "array": "array",
}
# Families that hold each other's values as written by peewee (JSON is text on SQLite and MariaDB).
COMPATIBLE_FAMILIES = frozenset({frozenset({"json", "text"})})


class Adoption(NamedTuple):
    """The catalog's verdict on one failed operation."""

    in_effect: bool
    completed_now: bool = False  # the missing rest (an index) was created just now: counts as executed


NOT_IN_EFFECT = Adoption(False)
IN_EFFECT = Adoption(True)


# --- types ------------------------------------------------------------------------------------------


def type_family(sql_type: str | None) -> str:
    """The family of a column type as the catalog or the DDL spells it (``character varying(9)`` -> text)."""
    text = (sql_type or "").strip().lower()
    if text.endswith("]") or text.startswith("array"):
        return "array"
    word = re.split(r"[^a-z0-9_-]", text, maxsplit=1)[0]
    return TYPE_FAMILIES.get(word, word)


def compatible_types(declared: str, found: str) -> bool:
    """Do a field's declared type and a column's catalog type hold the same kind of value?"""
    a, b = type_family(declared), type_family(found)
    if a == b or frozenset({a, b}) in COMPATIBLE_FAMILIES:
        return True
    # PostgreSQL reports extension types (hstore, vector) as USER-DEFINED: their name is not visible here.
    return "user-defined" in (a, b) and TYPE_FAMILIES.get(a) is None and TYPE_FAMILIES.get(b) is None


def declared_type(migrator: Any, fld: peewee.Field) -> str:
    """The SQL type ``fld`` is created with on the migrator's database (``VARCHAR(9)``, ``JSONB``...)."""
    try:
        node = fld.ddl_datatype(migrator.make_context())
    except (AttributeError, TypeError, KeyError) as exc:  # an unbound or exotic field: its logical type
        logger.debug("no DDL type for %s (%s); comparing its field_type", fld, exc)
        return str(fld.field_type)
    return str(getattr(node, "sql", None) or fld.field_type)


# --- catalog reads ------------------------------------------------------------------------------------


def _column(db: peewee.Database, table: str, column: str, schema: str | None) -> Any:
    for meta in db.get_columns(table, schema):
        if meta.name.lower() == column.lower():
            return meta
    return None


def _indexes(db: peewee.Database, table: str, schema: str | None) -> list[Any]:
    return list(db.get_indexes(table, schema)) if db.table_exists(table, schema) else []


def _columns_of(index: Any) -> list[str]:
    return [str(c).lower() if c is not None else "<expression>" for c in index.columns]


def _same_index(index: Any, columns: Sequence[str], unique: bool) -> bool:
    return _columns_of(index) == [c.lower() for c in columns] and bool(index.unique) == bool(unique)


def index_on(
    db: peewee.Database, table: str, columns: Sequence[str], unique: bool, schema: str | None
) -> Any:
    """An index of ``table`` on exactly ``columns`` (in order) with that uniqueness, else None."""
    return next((i for i in _indexes(db, table, schema) if _same_index(i, columns, unique)), None)


def find_index(db: peewee.Database, name: str, schema: str | None, first: str | None = None) -> Any:
    """The index called ``name`` on any table (``first`` looked at first), else None."""
    tables = [first] if first else []
    tables += [t for t in db.get_tables(schema) if t != first]
    for table in tables:
        for index in _indexes(db, table, schema):
            if index.name.lower() == name.lower():
                return index
    return None


def describe_index(index: Any) -> str:
    """``doc_title (UNIQUE) on doc (title)``."""
    kind = " (UNIQUE)" if index.unique else ""
    return f"{index.name}{kind} on {index.table} ({', '.join(_columns_of(index))})"


def index_conflict(index: Any, table: str, columns: Sequence[str], unique: bool) -> SchemaConflict:
    """The typed error for an index name already taken by an index on something else."""
    wanted = f"{table} ({', '.join(columns)}){' UNIQUE' if unique else ''}"
    return SchemaConflict(
        f"index name {index.name} is already taken by the index {describe_index(index)}, not one on "
        f"{wanted}: drop or rename that index, or give the new one another name (add_index(..., name=...))",
        category="duplicate_index",
        table=table,
    )


# --- verdicts per operation ----------------------------------------------------------------------------


def column_in_effect(
    db: peewee.Database, migrator: Any, table: str, column: str, fld: peewee.Field
) -> bool:
    """The column exists with a type of the same family and the same nullability as ``fld``."""
    meta = _column(db, table, column, migrator.schema) if db.table_exists(table, migrator.schema) else None
    if meta is None:
        return False
    wanted = declared_type(migrator, fld)
    if compatible_types(wanted, meta.data_type) and bool(meta.null) == bool(fld.null):
        return True
    logger.warning(
        "column %s.%s exists as %s %s, but the migration adds %s %s: not counted as applied",
        table,
        column,
        meta.data_type,
        "NULL" if meta.null else "NOT NULL",
        wanted,
        "NULL" if fld.null else "NOT NULL",
    )
    return False


def _name_the_colliding_index(
    db: peewee.Database, migrator: Any, table: str, column: str, fld: peewee.Field, statement: str | None
) -> None:
    """The column's CREATE INDEX failed (and took the column with it): name the index that holds the name."""
    if not (fld.index or fld.unique) or not re.search(
        r"\bcreate\s+(?:unique\s+)?index\b", statement or "", re.I
    ):
        return
    taken = find_index(db, make_index_name(table, [column]), migrator.schema, first=table)
    if taken is not None:
        raise index_conflict(taken, table, [column], bool(fld.unique))


def add_column_verdict(
    db: peewee.Database,
    migrator: Any,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    statement: str | None = None,
) -> Adoption:
    """add_column: the column is in effect, and so is its index (created now if only the index is missing)."""
    table, column, fld = _add_column_args(args, kwargs)
    if fld is None:
        return NOT_IN_EFFECT
    if not column_in_effect(db, migrator, table, column, fld):
        _name_the_colliding_index(db, migrator, table, column, fld, statement)
        return NOT_IN_EFFECT
    if not (fld.index or fld.unique):
        return IN_EFFECT
    if index_on(db, table, [column], bool(fld.unique), migrator.schema) is not None:
        return IN_EFFECT
    name = make_index_name(table, [column])
    taken = find_index(db, name, migrator.schema, first=table)
    if taken is not None:
        raise index_conflict(taken, table, [column], bool(fld.unique))
    # The column is there but its index is not (MySQL stopped between the two statements): build it now.
    logger.info("column %s.%s already exists without its index %s: creating the index", table, column, name)
    _create_missing_index(db, migrator, table, column, fld)
    return Adoption(True, completed_now=True)


def _create_missing_index(
    db: peewee.Database, migrator: Any, table: str, column: str, fld: peewee.Field
) -> None:
    """Build the index add_column(..., index=True) owes; a failure is a SchemaConflict with its category."""
    operation = migrator.add_index(table, (column,), bool(fld.unique), getattr(fld, "index_type", None))
    try:
        with db.savepoint() if db.in_transaction() else contextlib.nullcontext():
            migrator.migrate(operation)
    except peewee.DatabaseError as exc:
        info = classify_error(exc, migrator.engine)
        raise SchemaConflict(
            f"column {table}.{column} already exists, but creating its missing index failed: {info.message}",
            category=info.category.value,
            table=table,
        ) from exc


def _add_column_args(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str, peewee.Field | None]:
    values = list(args) + [kwargs.get(k) for k in ("table", "column_name", "field")[len(args) :]]
    fld = values[2] if len(values) > 2 and isinstance(values[2], peewee.Field) else None
    return str(values[0]), str(values[1]), fld


def add_index_in_effect(
    db: peewee.Database, migrator: Any, args: Sequence[Any], kwargs: dict[str, Any]
) -> bool:
    """add_index: an index on those columns with the same uniqueness exists on that table."""
    table = str(args[0])
    columns = [str(c) for c in (args[1] if len(args) > 1 else kwargs.get("columns", ()))]
    unique = bool(args[2] if len(args) > 2 else kwargs.get("unique", False))
    name = (args[6] if len(args) > 6 else kwargs.get("name")) or make_index_name(table, columns)
    if index_on(db, table, columns, unique, migrator.schema) is not None:
        return True
    taken = find_index(db, name, migrator.schema, first=table)
    if taken is not None:
        raise index_conflict(taken, table, columns, unique)
    return False


def add_foreign_key_in_effect(db: peewee.Database, migrator: Any, args: Sequence[Any]) -> bool:
    """add_foreign_key_constraint(table, column, rel, rel_column): that foreign key exists."""
    if len(args) < 4 or not db.table_exists(str(args[0]), migrator.schema):
        return False
    table, column, rel, rel_column = (str(a).lower() for a in args[:4])
    return any(
        k.column.lower() == column and k.dest_table.lower() == rel and k.dest_column.lower() == rel_column
        for k in db.get_foreign_keys(args[0], migrator.schema)
    )


def add_constraint_in_effect(db: peewee.Database, migrator: Any, args: Sequence[Any]) -> bool:
    """add_constraint(table, name, constraint): a constraint of that name exists (body not compared)."""
    if len(args) < 2:
        return False
    return engine_for(db).schema_object_exists("constraint", str(args[1]), migrator.schema) is True


def add_unique_in_effect(db: peewee.Database, migrator: Any, args: Sequence[Any]) -> bool:
    """add_unique(table, *columns): a unique index on those columns exists."""
    return index_on(db, str(args[0]), [str(c) for c in args[1:]], True, migrator.schema) is not None


def drop_in_effect(db: peewee.Database, migrator: Any, name: str, args: Sequence[Any]) -> bool:
    """drop_column / drop_index / drop_foreign_key_constraint: the object is absent."""
    schema = migrator.schema
    if name == "drop_table" and args:
        return not db.table_exists(str(args[0]), schema)
    if len(args) < 2:
        return False
    table, target = str(args[0]), str(args[1])
    if name == "drop_constraint":
        return engine_for(db).schema_object_exists("constraint", target, schema) is False
    if name == "drop_column":
        return not db.table_exists(table, schema) or _column(db, table, target, schema) is None
    if name == "drop_index":
        return find_index(db, target, schema, first=table) is None
    if name == "drop_foreign_key_constraint":
        keys = db.get_foreign_keys(table, schema) if db.table_exists(table, schema) else []
        return not any(k.column.lower() == target.lower() for k in keys)
    return False


# --- raw SQL ----------------------------------------------------------------------------------------------

_NAME = r"((?:[`\"\[]?[\w$]+[`\"\]]?\.)?[`\"\[]?[\w$]+[`\"\]]?)"
_SQL_OBJECTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "table",
        re.compile(rf"^create\s+(?:temporary\s+|temp\s+)?table\s+(?:if\s+not\s+exists\s+)?{_NAME}", re.I),
    ),
    (
        "index",
        re.compile(
            rf"^create\s+(?:unique\s+)?index\s+(?:concurrently\s+)?(?:if\s+not\s+exists\s+)?{_NAME}\s+on\s+{_NAME}",
            re.I,
        ),
    ),
    (
        "column",
        re.compile(
            rf"^alter\s+table\s+(?:only\s+)?(?:if\s+exists\s+)?{_NAME}\s+add\s+(?:column\s+)?(?:if\s+not\s+exists\s+)?"
            rf"{_NAME}",
            re.I,
        ),
    ),
    ("drop_table", re.compile(rf"^drop\s+table\s+(?:if\s+exists\s+)?{_NAME}", re.I)),
    (
        "drop_index",
        re.compile(
            rf"^drop\s+index\s+(?:concurrently\s+)?(?:if\s+exists\s+)?{_NAME}(?:\s+on\s+{_NAME})?", re.I
        ),
    ),
    (
        "drop_column",
        re.compile(
            rf"^alter\s+table\s+(?:only\s+)?(?:if\s+exists\s+)?{_NAME}\s+drop\s+(?:column\s+)?(?:if\s+exists\s+)?"
            rf"{_NAME}",
            re.I,
        ),
    ),
)


# Other schema objects, whose existence the engine reads from its catalog (Engine.schema_object_exists).
_KINDS = (
    r"(view|materialized\s+view|function|procedure|trigger|constraint\s+trigger|sequence|type|extension"
    r"|schema)"
)
_CREATE_OTHER = re.compile(
    rf"^create\s+(?:or\s+replace\s+)?(?:definer\s*=\s*\S+\s+)?(?:temp\s+|temporary\s+)?{_KINDS}\s+"
    rf"(?:if\s+not\s+exists\s+)?{_NAME}",
    re.I,
)
_DROP_OTHER = re.compile(rf"^drop\s+{_KINDS}\s+(?:if\s+exists\s+)?{_NAME}", re.I)


def _other_object(text: str) -> tuple[str, str] | None:
    """("view", "v") for CREATE VIEW v ..., ("drop_view", "v") for DROP VIEW v; None otherwise."""
    for prefix, pattern in (("", _CREATE_OTHER), ("drop_", _DROP_OTHER)):
        match = pattern.match(text)
        if match:
            return prefix + match.group(1).lower().split()[-1], match.group(2)
    return None


def _unquote(name: str | None) -> tuple[str | None, str]:
    """(schema, name) of a possibly quoted, possibly schema-qualified identifier."""
    parts = [p.strip('`"[]') for p in (name or "").split(".")]
    return (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0])


def parse_sql_object(statement: str) -> tuple[str, list[str]] | None:
    """(kind, names) of the object a CREATE TABLE/INDEX, ALTER TABLE ADD/DROP or DROP statement names."""
    text = strip_leading_comments(statement).strip()
    for kind, pattern in _SQL_OBJECTS:
        match = pattern.match(text)
        if match:
            return kind, [g for g in match.groups()]
    other = _other_object(text)
    return (other[0], [other[1]]) if other else None


_TABLE_KINDS = frozenset(kind for kind, _ in _SQL_OBJECTS)


def sql_in_effect(db: peewee.Database, migrator: Any, statement: str) -> bool:
    """A raw statement's object, parsed from the statement, exists (adding) or is absent (dropping)."""
    parsed = parse_sql_object(statement)
    if parsed is None:
        return False  # a statement we cannot read cannot be proven done
    kind, names = parsed
    schema, first = _unquote(names[0])
    schema = schema or migrator.schema
    if kind not in _TABLE_KINDS:
        exists = engine_for(db).schema_object_exists(kind.removeprefix("drop_"), first, schema)
        return exists is not None and exists != kind.startswith("drop_")
    if kind == "table":
        return bool(db.table_exists(first, schema))
    if kind == "drop_table":
        return not db.table_exists(first, schema)
    if kind == "index":
        return find_index(db, first, schema, first=_unquote(names[1])[1]) is not None
    if kind == "drop_index":
        return find_index(db, first, schema, first=_unquote(names[1])[1] if names[1] else None) is None
    column = _unquote(names[1])[1]
    present = db.table_exists(first, schema) and _column(db, first, column, schema) is not None
    return bool(present) if kind == "column" else not present


# --- the entry point ---------------------------------------------------------------------------------------


def _evidence(
    exc: BaseException, name: str, args: Sequence[Any], statement: str | None, engine: str
) -> bool:
    """Does the error itself say "already there" (adding) or "already gone" (dropping)? Only evidence."""
    category = classify_error(exc, engine, statement).category
    adding = not name.startswith("drop_")
    if name == "sql":  # the statement as written (the one sent may be wrapped: SET STATEMENT ... FOR ...)
        parsed = parse_sql_object(str(args[0]) if args else statement or "")
        adding = parsed is not None and not parsed[0].startswith("drop_")
    return category in (ALREADY_PRESENT if adding else ALREADY_ABSENT)


def adoption_verdict(
    db: peewee.Database,
    migrator: Any,
    exc: BaseException,
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    statement: str | None,
) -> Adoption:
    """Is the effect of the failed operation ``name(*args)`` already in the database? Read from the catalog.

    Raises :class:`SchemaConflict` when the catalog shows a collision (an index name taken
    by an index on other columns), which is an error, never an adoption.
    """
    engine = migrator.engine
    if isinstance(exc, SchemaConflict) and exc.category != "duplicate_index":
        return NOT_IN_EFFECT
    if not (isinstance(exc, SchemaConflict) or _evidence(exc, name, args, statement, engine)):
        return NOT_IN_EFFECT
    try:
        return _by_operation(db, migrator, name, args, kwargs, statement)
    except peewee.DatabaseError as introspection_error:  # classified, logged, and "not proven"
        logger.warning("could not read the catalog to check %s: %s", name, describe(introspection_error))
        return NOT_IN_EFFECT


def _by_operation(
    db: peewee.Database,
    migrator: Any,
    name: str,
    args: Sequence[Any],
    kwargs: dict[str, Any],
    statement: str | None,
) -> Adoption:
    if name in ("add_column", "alter_add_column"):
        return add_column_verdict(db, migrator, args, kwargs, statement)
    if name == "add_index":
        return Adoption(add_index_in_effect(db, migrator, args, kwargs))
    if name == "add_unique":
        return Adoption(add_unique_in_effect(db, migrator, args))
    if name == "add_foreign_key_constraint":
        return Adoption(add_foreign_key_in_effect(db, migrator, args))
    if name == "add_constraint":
        return Adoption(add_constraint_in_effect(db, migrator, args))
    if name == "create_tables":
        return Adoption(all(db.table_exists(t, s) for t, s in kwargs.get("tables", args)))
    if name == "sql":
        return Adoption(sql_in_effect(db, migrator, str(args[0]) if args else statement or ""))
    if name.startswith("drop_"):
        return Adoption(drop_in_effect(db, migrator, name, args))
    return NOT_IN_EFFECT


# --- create_tables -----------------------------------------------------------------------------------------


def table_name(model: type[peewee.Model]) -> str:
    """The model's table, schema-qualified when it has a schema."""
    meta = model._meta
    return f"{meta.schema}.{meta.table_name}" if meta.schema else str(meta.table_name)


def split_existing_tables(
    db: peewee.Database, models: Sequence[type[peewee.Model]]
) -> tuple[list[type[peewee.Model]], list[type[peewee.Model]]]:
    """(models whose table exists, models whose table does not), in the given order."""
    existing: list[type[peewee.Model]] = []
    missing: list[type[peewee.Model]] = []
    for model in models:
        meta = model._meta
        (existing if db.table_exists(meta.table_name, meta.schema) else missing).append(model)
    return existing, missing
