"""verify_schema(): compare Peewee models with the live database.

The live side comes from ``playhouse.reflection`` (which maps each engine's
column types to Peewee field classes). Its mapping is finer than what a model
can promise on every engine (MySQL has no boolean, SQLite stores a UUID as
text), so both sides are reduced to a *type family* before comparing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import peewee
from playhouse.reflection import Introspector

from api.db.engines import Engine, engine_for

logger = logging.getLogger(__name__)

# Field class -> family. Looked up along the class's MRO, so subclasses inherit.
TYPE_FAMILIES: dict[type[peewee.Field], str] = {
    peewee.BigAutoField: "bigint",
    peewee.BigIntegerField: "bigint",
    peewee.AutoField: "integer",
    peewee.IntegerField: "integer",
    peewee.SmallIntegerField: "integer",
    peewee.BooleanField: "boolean",
    peewee.FloatField: "float",
    peewee.DoubleField: "float",
    peewee.DecimalField: "decimal",
    peewee.CharField: "char",
    peewee.FixedCharField: "char",
    peewee.TextField: "text",
    peewee.UUIDField: "uuid",
    peewee.BinaryUUIDField: "blob",
    peewee.BlobField: "blob",
    peewee.DateTimeField: "datetime",
    peewee.TimestampField: "bigint",  # a BigIntegerField (BIGINT) since peewee 3.x
    peewee.DateField: "date",
    peewee.TimeField: "time",
    peewee.IPField: "bigint",
    peewee.BareField: "any",
}

@dataclass(frozen=True)
class SchemaDifference:
    """One way the live database differs from the models."""

    # missing_table, missing_column, type_mismatch, nullability, missing_index, missing_unique, extra_column
    kind: str
    table: str
    column: str | None
    expected: str | None
    actual: str | None
    severity: str = "error"  # error: the application may break; info: harmless drift

    def __str__(self) -> str:
        target = f"{self.table}.{self.column}" if self.column else self.table
        return f"{self.kind} {target}: expected {self.expected}, found {self.actual}"


@dataclass
class SchemaReport:
    """Every difference found; ``ok`` when none is an error."""

    differences: list[SchemaDifference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(d.severity == "error" for d in self.differences)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "differences": [asdict(d) for d in self.differences]}


def type_family(field_class: type[Any]) -> str:
    """The family of a Peewee field class (``char``, ``integer``...), ``other`` if unknown."""
    if issubclass(field_class, peewee.ForeignKeyField):
        return "integer"
    for klass in field_class.__mro__:
        family = TYPE_FAMILIES.get(klass)
        if family is not None:
            return family
    return "other"


def _expected_family(model_field: peewee.Field) -> str:
    if isinstance(model_field, peewee.ForeignKeyField):
        return type_family(type(model_field.rel_field))
    return type_family(type(model_field))


def _families_match(engine: Engine, expected: str, actual: str) -> bool:
    if expected == actual or "any" in (expected, actual) or "other" in (expected, actual):
        return True
    # Families an engine stores as another (engine.equivalent_families: expected -> also acceptable).
    return actual in engine.equivalent_families.get(expected, frozenset())


def _model_indexes(model: type[peewee.Model]) -> list[tuple[tuple[str, ...], bool]]:
    """(columns, unique) of every index the model declares, single-column and composite."""
    wanted: list[tuple[tuple[str, ...], bool]] = []
    for model_field in model._meta.sorted_fields:
        if model_field.primary_key:
            continue
        if model_field.unique or model_field.index or isinstance(model_field, peewee.ForeignKeyField):
            wanted.append(((model_field.column_name,), bool(model_field.unique)))
    for spec in model._meta.indexes:
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], (tuple, list)):
            names, unique = spec
            columns = tuple(model._meta.fields[name].column_name for name in names)
            wanted.append((columns, bool(unique)))
    return wanted


Add = Callable[[SchemaDifference], None]


def type_label(family: str, declared: Any) -> str:
    """How differences name a type: the family, then the column type if it says more (``char (VARCHAR)``)."""
    raw = str(declared or "").strip()
    return family if not raw or raw.lower() == family.lower() else f"{family} ({raw})"


def _check_column(add: Add, engine: Engine, table: str, model_field: peewee.Field, live: Any) -> None:
    name = model_field.column_name
    expected = _expected_family(model_field)
    actual = type_family(live.field_class)
    if not _families_match(engine, expected, actual):
        add(SchemaDifference("type_mismatch", table, name, type_label(expected, model_field.field_type),
                             type_label(actual, live.raw_column_type)))  # fmt: skip
    if not model_field.primary_key and bool(model_field.null) != bool(live.nullable):
        add(
            SchemaDifference(
                "nullability",
                table,
                name,
                "NULL" if model_field.null else "NOT NULL",
                "NULL" if live.nullable else "NOT NULL",
            )
        )


def _check_columns(add: Add, engine: Engine, model: type[peewee.Model], live_columns: dict[str, Any]) -> None:
    table = model._meta.table_name
    for model_field in model._meta.sorted_fields:
        live = live_columns.get(model_field.column_name)
        if live is None:
            name = model_field.column_name
            wanted = type_label(_expected_family(model_field), model_field.field_type)
            add(SchemaDifference("missing_column", table, name, wanted, "nothing"))
        else:
            _check_column(add, engine, table, model_field, live)
    declared = {f.column_name for f in model._meta.sorted_fields}
    for extra in sorted(set(live_columns) - declared):
        add(SchemaDifference("extra_column", table, extra, "nothing", "column", severity="info"))


def _check_indexes(add: Add, database: peewee.Database, model: type[peewee.Model]) -> None:
    table = model._meta.table_name
    live_indexes = [(tuple(index.columns), bool(index.unique)) for index in database.get_indexes(table)]
    for columns, unique in _model_indexes(model):
        matching = [u for cols, u in live_indexes if cols == columns]
        label = ",".join(columns)
        if not matching:
            wanted = "unique index" if unique else "index"
            add(SchemaDifference("missing_index", table, label, wanted, "nothing"))
        elif unique and not any(matching):
            add(SchemaDifference("missing_unique", table, label, "unique index", "non-unique index"))


def verify_schema(
    database: peewee.Database, models: Iterable[type[peewee.Model]], *, quiet: bool = False
) -> SchemaReport:
    """Compare ``models`` with the live database: tables, columns, types, nullability, indexes, uniques.

    Each difference is logged (WARNING for errors, INFO otherwise) unless ``quiet``: the caller reports them.
    """
    engine = engine_for(database)
    metadata = Introspector.from_database(database).metadata
    tables = set(database.get_tables())
    report = SchemaReport()
    add = report.differences.append
    for model in models:
        table = model._meta.table_name
        if table not in tables:
            add(SchemaDifference("missing_table", table, None, "table", "nothing"))
            continue
        _check_columns(add, engine, model, metadata.get_columns(table))
        _check_indexes(add, database, model)
    for difference in () if quiet else report.differences:
        level = logging.WARNING if difference.severity == "error" else logging.INFO
        logger.log(level, "schema differs from models: %s", difference)
    return report
