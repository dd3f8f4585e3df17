"""make_migration(): write a migration module from the difference between models and the live database.

The difference comes from three sources, each completing what the others lack:

* ``playhouse.schema_diff.diff_models`` (peewee 4.5): tables to create, columns added and
  dropped, indexes added and dropped. It does not look at types, nullability, defaults or
  foreign keys, shows a rename as a drop plus an add, and never proposes dropping a table.
* :func:`api.db.schema.verify.verify_schema`: type changes (by *type family*, so that an
  engine's own spelling is not a change) and nullability. It does not report indexes to
  drop or foreign keys, and a change inside a family (VARCHAR(40) to VARCHAR(200)) is
  invisible to it.
* ``playhouse.reflection`` through ``Database.get_foreign_keys``: the live foreign keys, which
  neither of the above compares. It only reflects; it diffs nothing.

Renames cannot be told from a drop and an add: ``renames`` says which. Dropped columns
become migrations only with ``allow_drop``; otherwise they are listed as comments.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peewee
from playhouse.schema_diff import IndexDiff, SchemaDiff, diff_models

from api.db.exceptions import ConfigurationError
from api.db.migrate.migrator import make_schema_migrator
from api.db.migrate.render import (
    Imports,
    field_source,
    frozen_closure,
    frozen_names,
    identifier,
    model_source,
)
from api.db.schema.verify import SchemaDifference, verify_schema

logger = logging.getLogger(__name__)

Rename = tuple[str, str, str]  # table, old column, new column


@dataclass(frozen=True)
class Change:
    """One generated migration: its name and the statements of its function."""

    name: str
    body: tuple[str, ...]
    note: str = ""


@dataclass
class MigrationPlan:
    """What makemigration found: the changes to write, the decisions left to the user, notes."""

    changes: list[Change] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)  # drops not generated (comments)
    imports: Imports = field(default_factory=Imports)
    frozen: list[type[peewee.Model]] = field(default_factory=list)
    frozen_names: dict[type, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MakeMigrationResult:
    """The outcome of :func:`make_migration`; ``path`` is None when nothing was written."""

    path: str | None
    migrations: tuple[str, ...]
    undecided: tuple[str, ...]
    notes: tuple[str, ...]
    source: str | None

    @property
    def written(self) -> bool:
        return self.path is not None


def parse_rename(spec: str) -> Rename:
    """``table.old:new`` as (table, old, new); a malformed one is a ConfigurationError."""
    target, _, new = spec.partition(":")
    table, _, old = target.rpartition(".")
    if not table or not old or not new:
        raise ConfigurationError(f"--rename {spec!r}: expected table.old:new, for example task.title:name")
    return table, old, new


# -- the difference -----------------------------------------------------------------------


class _Planner:
    """Turns the three differences into an ordered list of named changes."""

    def __init__(self, db: peewee.Database, models: Sequence[type[peewee.Model]], renames: Sequence[Rename],
                 allow_drop: bool) -> None:
        self.db = db
        self.models = {m._meta.table_name: m for m in models}
        self.diff: SchemaDiff = diff_models(db, models)
        self.created = {m._meta.table_name for m in self.diff.create_tables}
        self.renames = {(t, old): new for t, old, new in renames}
        self.allow_drop = allow_drop
        self.plan = MigrationPlan()
        needed = list(self.diff.create_tables) + [
            f.rel_model for f in self.diff.add_columns if isinstance(f, peewee.ForeignKeyField)
        ]
        needed += [f.rel_model for f in self._missing_foreign_keys()]
        self.plan.frozen = frozen_closure(needed)
        self.plan.frozen_names = frozen_names(self.plan.frozen)
        self._check_renames()

    def _check_renames(self) -> None:
        drops = set(self.diff.drop_columns)
        adds = {(f.model._meta.table_name, f.column_name) for f in self.diff.add_columns}
        for (table, old), new in self.renames.items():
            if (table, old) not in drops:
                raise ConfigurationError(f"--rename {table}.{old}:{new}: "
                                         f"the database has no column {table}.{old} "
                                         "that the models lack; check the table and the old name")
            if (table, new) not in adds:
                raise ConfigurationError(f"--rename {table}.{old}:{new}: the models have no new column "
                                         f"{table}.{new}; check the new name")

    def add(self, name: str, *body: str, note: str = "") -> None:
        self.plan.changes.append(Change(identifier(name), tuple(body), note))

    def build(self) -> MigrationPlan:
        self._create_tables()
        self._renames()
        self._add_columns()
        self._verify_changes()
        self._indexes()
        self._foreign_keys()
        self._drops()
        return self.plan

    def _create_tables(self) -> None:
        for model in self.diff.create_tables:
            self.add(f"create_table_{model._meta.table_name}",
                     f"m.create_tables({self.plan.frozen_names[model]})")

    def _renames(self) -> None:
        for (table, old), new in self.renames.items():
            self.add(f"rename_column_{table}_{old}_{new}", f"m.rename_column({table!r}, {old!r}, {new!r})")

    def _renamed_to(self, table: str) -> set[str]:
        return {new for (t, _), new in self.renames.items() if t == table}

    def _add_columns(self) -> None:
        for fld in self.diff.add_columns:
            table, column = fld.model._meta.table_name, fld.column_name
            if column in self._renamed_to(table):
                continue
            note = ""
            if not fld.null and fld.default is None:
                fld = fld.clone()
                fld.null = True
                note = (f"{table}.{column} is NOT NULL without a default in the model: added nullable; fill "
                        f"it (m.backfill or an UPDATE), then m.add_not_null({table!r}, {column!r})")
            source = field_source(fld, self.plan.imports, self.plan.frozen_names, in_model=False)
            self.add(
                f"add_column_{table}_{column}", f"m.add_column({table!r}, {column!r}, {source})", note=note
            )

    def _verify_changes(self) -> None:
        for difference in verify_schema(self.db, list(self.models.values()), quiet=True).differences:
            if difference.table in self.created or difference.column is None:
                continue
            if difference.kind == "type_mismatch":
                self._type_change(difference)
            elif difference.kind == "nullability":
                self._nullability(difference)

    def _model_field(self, table: str, column: str) -> peewee.Field:
        return next(f for f in self.models[table]._meta.sorted_fields if f.column_name == column)

    def _type_change(self, difference: SchemaDifference) -> None:
        table, column = difference.table, str(difference.column)
        fld = self._model_field(table, column)
        if isinstance(fld, peewee.ForeignKeyField):
            self.plan.undecided.append(f"foreign key column {table}.{column}: "
                                       f"{difference.actual} in the database, "
                                       f"{difference.expected} in the models: change its type by hand")
            return
        source = field_source(fld, self.plan.imports, self.plan.frozen_names, in_model=False)
        self.add(f"alter_column_type_{table}_{column}",
                 f"m.alter_column_type({table!r}, {column!r}, {source})",
                 note=f"{table}.{column}: {difference.actual} -> {difference.expected}")

    def _nullability(self, difference: SchemaDifference) -> None:
        table, column = difference.table, str(difference.column)
        if difference.expected == "NULL":
            self.add(f"drop_not_null_{table}_{column}", f"m.drop_not_null({table!r}, {column!r})")
        else:
            self.add(f"add_not_null_{table}_{column}", f"m.add_not_null({table!r}, {column!r})",
                     note="fails while a row holds NULL there: fill those rows first")

    # -- indexes -------------------------------------------------------------------------

    def _renamed_signature(self, index: IndexDiff) -> tuple[tuple[str, ...], bool] | None:
        if index.columns is None:
            return None
        columns = tuple(self.renames.get((index.table, c), c) for c in index.columns)
        return columns, bool(index.unique)

    def _indexes(self) -> None:
        created_by_add_column = {
            (f.model._meta.table_name, (f.column_name,))
            for f in self.diff.add_columns
            if f.index or f.unique or isinstance(f, peewee.ForeignKeyField)
        }
        adds = [i for i in self.diff.add_indexes if (i.table, i.columns) not in created_by_add_column]
        kept = self._index_drops({(i.table, i.columns, bool(i.unique)) for i in adds})
        for index in adds:
            if (index.table, index.columns, bool(index.unique)) not in kept:
                self._index_add(index)

    def _index_drops(self, add_signatures: set[tuple[str, Any, bool]]) -> set[tuple[str, Any, bool]]:
        """Emit the index drops; return the indexes a rename carries over (neither dropped nor added)."""
        dropped = set(self.diff.drop_columns)
        kept: set[tuple[str, Any, bool]] = set()
        for index in self.diff.drop_indexes:
            renamed = self._renamed_signature(index)
            if renamed is not None and (index.table, *renamed) in add_signatures:
                kept.add((index.table, *renamed))
            elif not any((index.table, c) in dropped for c in index.columns or ()):
                self.add(
                    f"drop_index_{index.table}_{index.name}", f"m.drop_index({index.table!r}, {index.name!r})"
                )
        return kept

    def _index_add(self, index: IndexDiff) -> None:
        if index.columns is None:
            self.plan.undecided.append(
                f"index {index.table}.{index.name} (partial or expression): add by hand"
            )
            return
        kind = "add_unique_index" if index.unique else "add_index"
        self.add(f"{kind}_{index.table}_{'_'.join(index.columns)}",
                 f"m.add_index({index.table!r}, {tuple(index.columns)!r}, {bool(index.unique)!r})")

    # -- foreign keys ----------------------------------------------------------------------

    def _missing_foreign_keys(self) -> list[peewee.ForeignKeyField]:
        added = {(f.model._meta.table_name, f.column_name) for f in self.diff.add_columns}
        missing = []
        for table, model in self.models.items():
            if table in self.created:
                continue
            live = {(fk.column, fk.dest_table) for fk in self.db.get_foreign_keys(table)}
            for fld in model._meta.sorted_fields:
                if not isinstance(fld, peewee.ForeignKeyField) or (table, fld.column_name) in added:
                    continue
                if (fld.column_name, fld.rel_model._meta.table_name) not in live:
                    missing.append(fld)
        return missing

    def _foreign_keys(self) -> None:
        # playhouse's own flag: False where a constraint cannot be added to an existing table (SQLite).
        can_add = make_schema_migrator(self.db).explicit_create_foreign_key
        for fld in self._missing_foreign_keys():
            table, column = fld.model._meta.table_name, fld.column_name
            rel, rel_column = fld.rel_model._meta.table_name, fld.rel_field.column_name
            if not can_add:
                self.plan.undecided.append(f"foreign key {table}.{column} -> {rel}.{rel_column}: this engine "
                                           "cannot add one to an existing table; rebuild the table by hand")
                continue
            options = "".join(
                f", {k}={getattr(fld, k)!r}" for k in ("on_delete", "on_update") if getattr(fld, k)
            )
            self.add(f"add_foreign_key_{table}_{column}",
                     f"m.add_foreign_key_constraint({table!r}, {column!r}, {rel!r}, {rel_column!r}{options})")

    def _drops(self) -> None:
        for table, column in self.diff.drop_columns:
            if (table, column) in self.renames:
                continue
            if self.allow_drop:
                self.add(f"drop_column_{table}_{column}", f"m.drop_column({table!r}, {column!r})",
                         note="destroys the column's data: deploy code that no longer reads it first")
            else:
                self.plan.undecided.append(
                    f"column {table}.{column} is not in the models: drop it (--allow-drop) or name its new "
                    f"name (--rename {table}.{column}:NEW)"
                )


def plan_migration(
    db: peewee.Database,
    models: Sequence[type[peewee.Model]],
    *,
    renames: Iterable[Rename] = (),
    allow_drop: bool = False,
) -> MigrationPlan:
    """The changes that bring ``db`` to ``models``, in the order they must run."""
    plan = _Planner(db, models, list(renames), allow_drop).build()
    _unique_names(plan.changes)
    return plan


def _unique_names(changes: list[Change]) -> None:
    seen: dict[str, int] = {}
    for i, change in enumerate(changes):
        count = seen.get(change.name, 0) + 1
        seen[change.name] = count
        if count > 1:
            changes[i] = Change(f"{change.name}_{count}", change.body, change.note)


# -- the module ------------------------------------------------------------------------------


def render_module(plan: MigrationPlan, *, source_spec: str, prefix: str = "") -> str:
    """The generated module's text: frozen models, one function per change, MIGRATIONS."""
    classes = [model_source(m, plan.imports, plan.frozen_names) for m in plan.frozen]
    functions = [_function(change) for change in plan.changes]
    header = [
        f'"""Migrations generated by `python -m api.db makemigration --models {source_spec}`.',
        "",
        "Review them before use; append MIGRATIONS to the application's list; never edit one once applied.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *plan.imports.lines(),
        "",
        "from api.db import Migration",
    ]
    parts = classes + functions
    if classes:
        parts[0] = ("# Frozen copies of the models as they are now: "
                    "a later model change cannot alter these.\n\n\n"
                    + parts[0])
    comments = [f"# - {text}" for text in plan.undecided + plan.imports.notes]
    if comments:
        parts.append("\n".join(["# Not generated: decide, then add by hand (or rerun with the option named):",
                                *comments]))
    entries = [f"    Migration({prefix + c.name!r}, {c.name})," for c in plan.changes]
    parts.append("\n".join(["MIGRATIONS = [", *entries, "]"]))
    # isort (ruff I001): one blank line between the imports and a comment, two before a definition.
    gap = "\n\n" if parts[0].startswith("#") else "\n\n\n"
    return "\n".join(header) + gap + "\n\n\n".join(parts) + "\n"


def _function(change: Change) -> str:
    lines = [f"def {change.name}(m):"]
    if change.note:
        lines.append(f"    # {change.note}")
    lines += [f"    {statement}" for statement in change.body]
    return "\n".join(lines)


def make_migration(
    db: peewee.Database,
    models: Sequence[type[peewee.Model]],
    *,
    source_spec: str,
    name: str | None = None,
    out: str | os.PathLike[str] | None = None,
    renames: Iterable[Rename] = (),
    allow_drop: bool = False,
) -> MakeMigrationResult:
    """Write a migration module bringing ``db`` to ``models``; nothing is written when nothing differs.

    ``name``: the module's name (default ``schema_migration``) and the prefix ``NAME.`` of
    each migration's name when given. ``out``: the file (default ``NAME.py``); an existing
    file is never overwritten.
    """
    with db.connection_context():
        plan = plan_migration(db, models, renames=renames, allow_drop=allow_drop)
    names = tuple((f"{name}." if name else "") + c.name for c in plan.changes)
    notes = tuple(plan.imports.notes)
    if not plan.changes:
        logger.info("models match the database: no migration written")
        return MakeMigrationResult(None, (), tuple(plan.undecided), notes, None)
    source = render_module(plan, source_spec=source_spec, prefix=f"{name}." if name else "")
    path = Path(out) if out else Path(f"{identifier(name or 'schema_migration')}.py")
    if path.exists():
        raise ConfigurationError(f"{path} exists: a generated module is never overwritten; choose another "
                                 "--out or --name, or remove that file")
    path.write_text(source, encoding="utf-8")
    logger.info("wrote %d migration(s) to %s", len(names), path)
    return MakeMigrationResult(str(path), names, tuple(plan.undecided), notes, source)
