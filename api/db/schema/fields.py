"""Field compatibility: catch, before a migration runs, model fields that will not work as written.

``validate_models(models, db)`` returns a :class:`FieldWarning` per problem (and logs
it): index keys over the engine's byte limit (an indexed ``CharField(max_length=1024)``
on MySQL/MariaDB utf8mb4), TEXT/BLOB columns indexed on MySQL without a prefix
length, identifiers over the engine's length limit, VARCHAR lengths the engine
refuses, and column types another engine does not have. ``get_equivalent_type``
translates a column type between engines using peewee's own type tables.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Union

import peewee
from playhouse.migrate import _truncate_constraint_name

from api.db.engines import ENGINE_OF_FLAVOUR, ENGINES, Engine, engine_named
from api.db.engines.compat import DatabaseCompat, normalize_flavour
from api.db.exceptions import ConfigurationError

logger = logging.getLogger(__name__)

# Bytes one character may take in an index key: utf8mb4 on MySQL/MariaDB, UTF-8 on PostgreSQL.
BYTES_PER_CHAR = 4

# Key bytes of fixed-size column types in a MySQL/InnoDB index (peewee field_type -> bytes).
FIXED_KEY_BYTES: dict[str, int] = {
    "AUTO": 4, "INT": 4, "SMALLINT": 2, "BIGAUTO": 8, "BIGINT": 8, "BOOL": 1, "FLOAT": 4, "DOUBLE": 8,
    "DATE": 3, "TIME": 3, "DATETIME": 8, "DECIMAL": 16, "UUID": 40 * BYTES_PER_CHAR, "UUIDB": 16,
}
# peewee field types stored as TEXT/BLOB on MySQL: an index on them needs a prefix length.
UNBOUNDED_TYPES = frozenset({"TEXT", "BLOB", "JSON"})

Target = Union[str, peewee.Database, DatabaseCompat]


@dataclass(frozen=True)
class FieldWarning:
    """One field (or index) that will not work as written on one engine."""

    model: str  # model class name, "" for an unbound field
    field: str  # field or index name
    db_type: str  # flavour: postgres, mysql, mariadb, sqlite
    # index_key_too_long, text_index_needs_prefix, identifier_too_long, varchar_too_long, type_not_native
    code: str
    message: str

    def __str__(self) -> str:
        return self.message


def _compat(target: Target) -> DatabaseCompat:
    if isinstance(target, DatabaseCompat):
        return target
    if isinstance(target, peewee.Database):
        return DatabaseCompat.for_database(target)
    return DatabaseCompat(target)


def _label(fld: peewee.Field) -> tuple[str, str]:
    model = getattr(fld, "model", None)
    name = getattr(fld, "name", None) or fld.column_name or "?"
    return (model.__name__ if model is not None else ""), str(name)


def _column(fld: peewee.Field) -> str:
    return str(fld.column_name or _label(fld)[1])


def _engine_of(compat: DatabaseCompat) -> type[Engine]:
    return engine_named(compat.engine)


def _identifier_warning(
    kind: str, name: str, compat: DatabaseCompat, model: str, owner: str
) -> list[FieldWarning]:
    limit = compat.get("max_identifier_length")
    if limit is None:
        return []
    engine = _engine_of(compat)
    size = len(name.encode("utf-8")) if engine.identifier_limit_in_bytes else len(name)
    if size <= limit:
        return []
    unit = "bytes" if engine.identifier_limit_in_bytes else "characters"
    consequence = engine.identifier_too_long_consequence.format(title=compat.name)
    return [
        FieldWarning(
            model, owner, compat.flavour, "identifier_too_long",
            f"{model + '.' if model else ''}{owner}: {kind} name {name!r} is {size} {unit}, "
            f"over {compat.name}'s limit of {limit}; {consequence}. "
            "Shorten it (column_name= / table_name= / index name=)",
        )
    ]


def _key_bytes(fld: peewee.Field, per_char: int = BYTES_PER_CHAR) -> int | None:
    """Bytes the field may take in an index key (``per_char`` bytes a character); None when unbounded."""
    field_type = str(fld.field_type).upper()
    if field_type in UNBOUNDED_TYPES:
        return None
    max_length = getattr(fld, "max_length", None)
    if field_type in ("VARCHAR", "CHAR") and max_length:
        return int(max_length) * per_char
    return FIXED_KEY_BYTES.get(field_type, 8)


def _text_index_warnings(
    fields: list[peewee.Field], index_name: str, compat: DatabaseCompat, model: str
) -> list[FieldWarning]:
    """TEXT/BLOB columns in an index, where the engine needs a prefix length for them."""
    consequence = _engine_of(compat).text_index_consequence.get(compat.flavour)
    if consequence is None:
        return []
    return [
        FieldWarning(
            model, _label(fld)[1], compat.flavour, "text_index_needs_prefix",
            f"{model + '.' if model else ''}{_label(fld)[1]}: {fld.field_type} column {_column(fld)!r} is "
            f"indexed ({index_name}), but {consequence}; "
            "use a CharField(max_length<=768) or an explicit index on a prefix, e.g. "
            f"SQL('CREATE INDEX ... ({_column(fld)}(191))')",
        )
        for fld in fields
        if _key_bytes(fld) is None
    ]


def _key_length_warnings(
    fields: list[peewee.Field], index_name: str, compat: DatabaseCompat, model: str
) -> list[FieldWarning]:
    """An index key that may take more bytes than the engine's key limit."""
    limit = compat.get("max_index_key_bytes")
    engine = _engine_of(compat)
    per_char = engine.index_key_bytes_per_char
    if limit is None or per_char is None:
        return []
    total = sum(_key_bytes(f, per_char) or 0 for f in fields)
    if total <= limit:
        return []
    owner = _label(fields[0])[1] if len(fields) == 1 else index_name
    columns = ", ".join(_column(f) for f in fields)
    return [
        FieldWarning(
            model, owner, compat.flavour, "index_key_too_long",
            f"{model + '.' if model else ''}{owner}: index {index_name} on ({columns}) takes up to "
            f"{total} bytes ({per_char} byte(s) per character), over {compat.name}'s {limit}-byte key limit"
            + engine.key_limit_consequence[compat.flavour]
            + f"; keep indexed text at max_length <= {limit // per_char} or index a hash of it",
        )
    ]


def _index_warnings(
    fields: list[peewee.Field], index_name: str, compat: DatabaseCompat, model: str
) -> list[FieldWarning]:
    # An index refused for its TEXT/BLOB columns is not also measured.
    return _text_index_warnings(fields, index_name, compat, model) or _key_length_warnings(
        fields, index_name, compat, model
    )


def _home_engine(fld: peewee.Field) -> type[Engine] | None:
    """The engine whose playhouse module defines the field's class, None for a portable field."""
    module = type(fld).__module__
    return next((engine for engine in ENGINES if module in engine.field_modules), None)


def _native_type_warnings(
    fld: peewee.Field, compat: DatabaseCompat, model: str, name: str
) -> list[FieldWarning]:
    prefix = f"{model + '.' if model else ''}{name}"
    home = _home_engine(fld)
    if home is None or home is _engine_of(compat):
        return []
    return [
        FieldWarning(
            model, name, compat.flavour, "type_not_native",
            f"{prefix}: {type(fld).__name__} comes from {type(fld).__module__} and needs {home.name}; "
            f"{compat.name} has no such column type. Use a portable field (e.g. JSONField from the matching "
            "playhouse module, TextField)",
        )
    ]


def _vector_warnings(fld: peewee.Field, compat: DatabaseCompat, model: str, name: str) -> list[FieldWarning]:
    if str(fld.field_type).upper() != "VECTOR" or compat.has("vector_type"):
        return []
    prefix = f"{model + '.' if model else ''}{name}"
    return [
        FieldWarning(model, name, compat.flavour, "type_not_native",
                     f"{prefix}: a VECTOR column needs vector_type: {compat.explain_missing('vector_type')}")
    ]


def _varchar_warnings(fld: peewee.Field, compat: DatabaseCompat, model: str, name: str) -> list[FieldWarning]:
    max_length = getattr(fld, "max_length", None)
    max_varchar = compat.get("max_varchar")
    if str(fld.field_type).upper() != "VARCHAR" or not max_length or not max_varchar:
        return []
    if int(max_length) <= max_varchar:
        return []
    return [
        FieldWarning(
            model, name, compat.flavour, "varchar_too_long",
            f"{model + '.' if model else ''}{name}: VARCHAR({max_length}) is over {compat.name}'s limit of "
            f"{max_varchar} characters; use a TextField",
        )
    ]


COLUMN_CHECKS = (_native_type_warnings, _vector_warnings, _varchar_warnings)


def _column_warnings(fld: peewee.Field, compat: DatabaseCompat) -> list[FieldWarning]:
    model, name = _label(fld)
    warnings = _identifier_warning("column", fld.column_name or name, compat, model, name)
    for check in COLUMN_CHECKS:
        warnings += check(fld, compat, model, name)
    return warnings


def validate_field_for_db(fld: peewee.Field, db_type: Target) -> list[FieldWarning]:
    """Problems ``fld`` will have on ``db_type`` (a flavour name, a database or a DatabaseCompat); [] if none.

    An indexed or unique field is checked as its own single-column index.
    """
    compat = _compat(db_type)
    warnings = _column_warnings(fld, compat)
    if (fld.index or fld.unique) and not fld.primary_key:
        model, name = _label(fld)
        table = fld.model._meta.table_name if getattr(fld, "model", None) is not None else "table"
        index_name = _truncate_constraint_name(f"{table}_{fld.column_name or name}")
        warnings += _index_warnings([fld], index_name, compat, model)
        warnings += _identifier_warning("index", index_name, compat, model, name)
    return warnings


def _index_fields(index: Any) -> list[peewee.Field]:
    return [e for e in getattr(index, "_expressions", []) if isinstance(e, peewee.Field)]


def validate_model(model: type[peewee.Model], db_type: Target) -> list[FieldWarning]:
    """Problems of every field and index of ``model`` on ``db_type``."""
    compat = _compat(db_type)
    meta = model._meta
    warnings = _identifier_warning("table", meta.table_name, compat, model.__name__, meta.table_name)
    for fld in meta.sorted_fields:
        warnings += _column_warnings(fld, compat)
    for index in meta.fields_to_index():
        fields = _index_fields(index)
        name = str(getattr(index, "_name", "") or "")
        if fields:
            warnings += _index_warnings(fields, name, compat, model.__name__)
        if name:
            owner = fields[0].name if len(fields) == 1 else name
            warnings += _identifier_warning("index", name, compat, model.__name__, owner)
    return warnings


def validate_models(models: Iterable[type[peewee.Model]], db_type: Target) -> list[FieldWarning]:
    """Problems of all ``models`` on ``db_type``, each logged as a warning; call it before migrating."""
    compat = _compat(db_type)
    warnings: list[FieldWarning] = []
    for model in models:
        warnings += validate_model(model, compat)
    for warning in warnings:
        logger.warning("field compatibility (%s): %s", warning.code, warning.message)
    return warnings


class DataBaseModel(peewee.Model):
    """A peewee Model that can check its fields against the engine it is bound to."""

    @classmethod
    def validate_fields(cls, db_type: Target | None = None) -> list[FieldWarning]:
        """Warnings for fields of this model that will not work as written (logged; [] if all is well).

        ``db_type`` defaults to the model's bound database (read live for its version).
        """
        target = db_type if db_type is not None else cls._meta.database
        if target is None:
            raise ConfigurationError(
                f"{cls.__name__} is bound to no database: pass db_type= to validate_fields()"
            )
        return validate_models([cls], target)


# --- type translation ---------------------------------------------------------------------------

# When several peewee types share one native type, the first listed wins on the way back.
_PREFERRED_KEYS = ("VARCHAR", "TEXT", "INT", "BIGINT", "BOOL", "DATETIME", "DOUBLE", "DECIMAL", "BLOB",
                   "UUID", "AUTO")


def _engine(name: str) -> type[Engine]:
    return ENGINE_OF_FLAVOUR[normalize_flavour(name)]


def _peewee_key(native: str, engine: type[Engine]) -> str | None:
    table = engine.column_types()
    candidates = [key for key, value in table.items() if value and value.upper() == native]
    if not candidates:
        return None
    ordered = sorted(candidates, key=lambda k: _PREFERRED_KEYS.index(k) if k in _PREFERRED_KEYS else 99)
    return ordered[0]


def _is_field(field_type: Any) -> bool:
    if isinstance(field_type, type):
        return issubclass(field_type, peewee.Field)
    return isinstance(field_type, peewee.Field)


def _field_column_type(field_type: Any, target: type[Engine], target_db: str) -> str:
    """The column type of a peewee Field class or instance on ``target``."""
    peewee_key = str(field_type.field_type).upper()
    types = target.column_types()
    if peewee_key not in types:
        raise ConfigurationError(
            f"peewee type {peewee_key} of {field_type!r} has no column type on {target_db}"
        )
    return types[peewee_key]


def _split_type(field_type: Any) -> tuple[str, str, str]:
    """(normalized text, base type, modifiers such as ``(10,2)``) of a native column type."""
    text = " ".join(str(field_type).upper().split())
    match = re.fullmatch(r"([A-Z_ ]+?)\s*(\(\s*[\d,\s]+\))?", text)
    if match is None:
        raise ConfigurationError(f"cannot read the column type {field_type!r}")
    return text, match.group(1).strip(), (match.group(2) or "").replace(" ", "")


def _via_peewee(
    text: str, base: str, modifiers: str, source: type[Engine], target: type[Engine]
) -> str | None:
    """The target type through peewee's type key for ``base`` on ``source``; None when peewee has none."""
    key: str | None = _peewee_key(base, source) or _peewee_key(text, source)
    if key is None and base in source.column_types():
        key = base
    if key is None:
        return None
    native = target.column_types()[key]
    if modifiers and "(" not in native and key in ("VARCHAR", "CHAR", "DECIMAL"):
        native += modifiers
    return native


def get_equivalent_type(field_type: Any, source_db: str, target_db: str) -> str:
    """The column type on ``target_db`` that holds what ``field_type`` holds on ``source_db``.

    ``field_type`` is a native column type (``"JSONB"``, ``"VARCHAR(255)"``, ``"BIGSERIAL"``),
    a peewee type key (``"DATETIME"``, ``"UUID"``) or a peewee Field class or instance.
    """
    source, target = _engine(source_db), _engine(target_db)
    if _is_field(field_type):
        return _field_column_type(field_type, target, target_db)
    text, base, modifiers = _split_type(field_type)
    natives = target.native_equivalents
    if text in natives:
        return natives[text]
    native = _via_peewee(text, base, modifiers, source, target)
    if native is not None:
        return native
    if base in natives:
        mapped = natives[base]
        return mapped + modifiers if mapped == base else mapped
    raise ConfigurationError(
        f"no known equivalent of {field_type!r} from {source_db} on {target_db}; "
        "map it by hand or use a peewee field type"
    )
