"""The way back, as data: the inverse of each operation a migration runs, read from the catalog before it.

While a migration runs, :meth:`InverseRecorder.before` is called for each operation on ``m``, before
it runs, and records what undoes it (``add_column`` -> drop it; ``alter_column_type`` -> back to the
type, nullability and default the catalog showed...). The list is stored as JSON in the history row,
so a rollback works from what the database saw, even after the migration's code changed.
:func:`replay` runs a recorded plan backwards through a migrator ``m``. An operation without a safe
inverse (``drop_column``, ``drop_table``, ``m.sql``, data changes) is recorded as ``irreversible``.
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import peewee
from playhouse.migrate import make_index_name

from api.db.engines import engine_for

logger = logging.getLogger(__name__)

IRREVERSIBLE = "irreversible"
NOOP = "noop"

Entry = dict[str, Any]


def _arguments(migrator: Any, name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The operation's arguments by parameter name (its signature on the schema migrator)."""
    try:
        bound = inspect.signature(getattr(migrator, name)).bind(*args, **kwargs)
    except (TypeError, ValueError, AttributeError):
        return dict(kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _column(db: peewee.Database, table: str, column: str) -> Any:
    """The catalog's ColumnMetadata of ``table.column``, or None."""
    return next((c for c in db.get_columns(table) if c.name == column), None)


def _add_column(db: peewee.Database, a: dict[str, Any]) -> Entry:
    return {"op": "drop_column", "table": a["table"], "column": a["column_name"]}


def _rename_column(db: peewee.Database, a: dict[str, Any]) -> Entry:
    return {"op": "rename_column", "table": a["table"], "old": a["new_name"], "new": a["old_name"]}


def _rename_table(db: peewee.Database, a: dict[str, Any]) -> Entry:
    return {"op": "rename_table", "old": a["new_name"], "new": a["old_name"]}


def _not_null(wanted_null: bool) -> Callable[[peewee.Database, dict[str, Any]], Entry]:
    """The inverse of add_not_null (``wanted_null=False``) or drop_not_null: only if it changes something."""

    def inverse(db: peewee.Database, a: dict[str, Any]) -> Entry:
        meta = _column(db, a["table"], a["column"])
        if meta is not None and bool(meta.null) == wanted_null:
            return {"op": NOOP}
        op = "drop_not_null" if not wanted_null else "add_not_null"
        return {"op": op, "table": a["table"], "column": a["column"]}

    return inverse


def _add_index(db: peewee.Database, a: dict[str, Any]) -> Entry:
    name = a.get("name") or make_index_name(a["table"], tuple(a["columns"]))
    return {"op": "drop_index", "table": a["table"], "name": name}


def _drop_index(db: peewee.Database, a: dict[str, Any]) -> Entry:
    index = next((i for i in db.get_indexes(a["table"]) if i.name == a["index_name"]), None)
    if index is None:
        return {"op": NOOP}
    if " where " in (index.sql or "").lower():
        return {"op": IRREVERSIBLE}
    return {"op": "add_index", "table": a["table"], "columns": list(index.columns),
            "unique": bool(index.unique), "name": index.name}  # fmt: skip


def _create_tables(db: peewee.Database, a: dict[str, Any]) -> Entry:
    created = [table for table, _schema in a.get("tables", ()) if not db.table_exists(table)]
    return {"op": "drop_tables", "tables": created[::-1]}


def _add_foreign_key(db: peewee.Database, a: dict[str, Any]) -> Entry:
    indexes = sorted(i.name for i in db.get_indexes(a["table"]))
    return {"op": "drop_foreign_key", "table": a["table"], "column": a["column_name"], "indexes": indexes}


def _column_state(db: peewee.Database, table: str, column: str) -> Entry:
    """Type, nullability and default of a column as the catalog shows them now."""
    engine = engine_for(db)
    meta = _column(db, table, column)
    return {"table": table, "column": column, "type": engine.column_type_sql(table, column),
            "null": True if meta is None else bool(meta.null),
            "default": engine.column_default_sql(table, column)}  # fmt: skip


def _alter_column_type(db: peewee.Database, a: dict[str, Any]) -> Entry:
    state = _column_state(db, a["table"], a["column"])
    return {"op": "alter_column_type", **state} if state["type"] else {"op": IRREVERSIBLE}


def _column_default(db: peewee.Database, a: dict[str, Any]) -> Entry:
    default = engine_for(db).column_default_sql(a["table"], a["column"])
    return {"op": "set_default", "table": a["table"], "column": a["column"], "default": default}


INVERSES: dict[str, Callable[[peewee.Database, dict[str, Any]], Entry]] = {
    "add_column": _add_column,
    "rename_column": _rename_column,
    "rename_table": _rename_table,
    "add_not_null": _not_null(False),
    "drop_not_null": _not_null(True),
    "add_index": _add_index,
    "drop_index": _drop_index,
    "create_tables": _create_tables,
    "add_foreign_key_constraint": _add_foreign_key,
    "alter_column_type": _alter_column_type,
    "add_column_default": _column_default,
    "drop_column_default": _column_default,
}


class InverseRecorder:
    """The inverse of each operation of one migration run, in order (entries of an earlier run kept)."""

    def __init__(self, seed: Sequence[Entry] | None = None) -> None:
        self.entries: list[Entry] = list(seed or ())

    def before(self, db: peewee.Database, migrator: Any, index: int,
               op: tuple[str, Sequence[Any], dict[str, Any]],
               description: str) -> None:  # fmt: skip
        """Record the inverse of operation ``index`` (name, args, kwargs) before it runs."""
        if index < len(self.entries):  # recorded by an earlier, interrupted run of the same migration
            return
        name, args, kwargs = op
        inverse = INVERSES.get(name)
        if inverse is None:
            entry: Entry = {"op": IRREVERSIBLE}
        else:
            entry = inverse(
                db, {"table": args[0] if args else None, **_arguments(migrator, name, args, kwargs)}
            )
        entry["operation"] = description
        del self.entries[index:]
        self.entries.append(entry)

    def to_json(self, count: int | None = None) -> str:
        """The plan of the first ``count`` operations (all by default) as JSON text."""
        entries = self.entries if count is None else self.entries[:count]
        return json.dumps(entries, sort_keys=True, separators=(",", ":"), default=str)


def irreversible_step(plan: Sequence[Entry]) -> str | None:
    """The description of the first operation of ``plan`` that has no safe inverse, else None."""
    return next((str(e.get("operation", e["op"])) for e in plan if e["op"] == IRREVERSIBLE), None)


# -- replaying a plan backwards ---------------------------------------------------------


class DefaultSQL(peewee.SQL):
    """A default as SQL text: a node for ``SET DEFAULT``, its text where playhouse formats a string."""

    def __str__(self) -> str:
        return str(self.sql)


class CatalogTypeField(peewee.Field):
    """A column as the catalog described it (type text, nullability, default), for ``alter_column_type``."""

    def __init__(self, entry: Entry) -> None:
        default = entry.get("default")
        # No column name: playhouse writes the column itself before the field's definition.
        super().__init__(
            null=bool(entry["null"]), constraints=[peewee.SQL(f"DEFAULT {default}")] if default else None
        )
        self.field_type = str(entry["type"])  # type: ignore[misc]


def _has_column(db: peewee.Database, table: str, column: str) -> bool:
    return db.table_exists(table) and _column(db, table, column) is not None


def _has_index(db: peewee.Database, table: str, name: str) -> bool:
    return db.table_exists(table) and any(i.name == name for i in db.get_indexes(table))


def _undo_restore_column(m: Any, e: Entry) -> None:
    """Back to the recorded type, then nullability and default where the type change left them different."""
    engine = engine_for(m.db)
    if (engine.column_type_sql(e["table"], e["column"]) or "").lower() != str(e["type"]).lower():
        m.alter_column_type(e["table"], e["column"], CatalogTypeField(e))
    meta = _column(m.db, e["table"], e["column"])
    if meta is not None and bool(meta.null) != bool(e["null"]):
        (m.drop_not_null if e["null"] else m.add_not_null)(e["table"], e["column"])
    _undo_restore_default(m, e)


def _undo_restore_default(m: Any, e: Entry) -> None:
    """Back to the recorded default (or none)."""
    current = engine_for(m.db).column_default_sql(e["table"], e["column"])
    if current == e["default"]:
        return
    if e["default"] is None:
        m.drop_column_default(e["table"], e["column"])
    else:
        m.add_column_default(e["table"], e["column"], DefaultSQL(e["default"]))


def _undo_set_null(m: Any, e: Entry, null: bool) -> None:
    meta = _column(m.db, e["table"], e["column"])
    if meta is not None and bool(meta.null) != null:
        (m.drop_not_null if null else m.add_not_null)(e["table"], e["column"])


def _undo_drop_foreign_key(m: Any, e: Entry) -> None:
    """Drop the constraint, and the index the server made for it (MySQL/MariaDB), if any."""
    if any(fk.column == e["column"] for fk in m.db.get_foreign_keys(e["table"])):
        m.drop_foreign_key_constraint(e["table"], e["column"])
    for index in m.db.get_indexes(e["table"]):
        if index.name not in e["indexes"]:
            m.drop_index(e["table"], index.name)


def _undo_drop_tables(m: Any, e: Entry) -> None:
    for table in e["tables"]:
        if m.db.table_exists(table):
            m.drop_table(table)


def _undo_drop_column(m: Any, e: Entry) -> None:
    if _has_column(m.db, e["table"], e["column"]):
        m.drop_column(e["table"], e["column"], cascade=False)


def _undo_rename_column(m: Any, e: Entry) -> None:
    if _has_column(m.db, e["table"], e["old"]):
        m.rename_column(e["table"], e["old"], e["new"])


def _undo_rename_table(m: Any, e: Entry) -> None:
    if m.db.table_exists(e["old"]) and not m.db.table_exists(e["new"]):
        m.rename_table(e["old"], e["new"])


def _undo_drop_index(m: Any, e: Entry) -> None:
    if _has_index(m.db, e["table"], e["name"]):
        m.drop_index(e["table"], e["name"])


def _undo_add_index(m: Any, e: Entry) -> None:
    if not _has_index(m.db, e["table"], e["name"]):
        m.add_index(e["table"], tuple(e["columns"]), e["unique"], name=e["name"])


# Each step looks at the catalog first, so replaying a plan again after a failure half way
# (MySQL/MariaDB, where completed DDL stays) repeats nothing that is already undone.
REPLAY: dict[str, Callable[[Any, Entry], None]] = {
    NOOP: lambda m, e: None,
    "drop_column": _undo_drop_column,
    "rename_column": _undo_rename_column,
    "rename_table": _undo_rename_table,
    "add_not_null": lambda m, e: _undo_set_null(m, e, False),
    "drop_not_null": lambda m, e: _undo_set_null(m, e, True),
    "drop_index": _undo_drop_index,
    "add_index": _undo_add_index,
    "drop_tables": _undo_drop_tables,
    "drop_foreign_key": _undo_drop_foreign_key,
    "alter_column_type": _undo_restore_column,
    "set_default": _undo_restore_default,
}


def replay(plan: Sequence[Entry]) -> Callable[[Any], None]:
    """A ``down(m)`` that undoes ``plan``: each recorded inverse, last operation first."""

    def down(m: Any) -> None:
        for entry in reversed(plan):
            REPLAY[entry["op"]](m, entry)

    return down
