"""Python source for models and fields, as a generated migration module writes them (makemigration).

A field becomes a constructor call (``peewee.CharField(max_length=40, null=True)``) that
repeats only the arguments differing from the constructor's defaults; a model becomes a
frozen copy (a class of its own in the generated module) so that a later change to the
live model cannot alter what an applied migration does.
"""

from __future__ import annotations

import datetime
import decimal
import inspect
import keyword
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import peewee
from peewee import sort_models  # type: ignore[attr-defined]

# Constructor arguments a generated field repeats, when the constructor takes them and the value
# differs from its default. Others (help_text, choices, formats...) do not change the schema.
FIELD_ARGUMENTS = (
    "max_length",
    "max_digits",
    "decimal_places",
    "auto_round",
    "dimensions",
    "null",
    "index",
    "unique",
    "default",
    "primary_key",
    "collation",
)
# Sizes are written even when they equal the constructor's default: a frozen copy must not follow
# a change of peewee's defaults.
ALWAYS_WRITTEN = frozenset({"max_length", "max_digits", "decimal_places"})
_NO_DEFAULT = object()


@dataclass
class Imports:
    """The modules a generated source needs, and what could not be rendered (for the comments)."""

    modules: set[str] = field(default_factory=lambda: {"peewee"})
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """``import x`` lines: standard library first, then the rest, each group sorted (ruff's isort)."""
        stdlib = sorted(m for m in self.modules if m.split(".")[0] in _STDLIB)
        others = sorted(m for m in self.modules if m.split(".")[0] not in _STDLIB)
        out = [f"import {m}" for m in stdlib]
        if stdlib and others:
            out.append("")
        out.extend(f"import {m}" for m in others)
        return out


_STDLIB = {"datetime", "decimal", "uuid", "time", "json"}


def identifier(text: str) -> str:
    """``text`` as a lower-case Python identifier (``add_column_task_priority``)."""
    slug = re.sub(r"[^0-9a-zA-Z]+", "_", text).strip("_").lower() or "change"
    if slug[0].isdigit() or keyword.iskeyword(slug):
        slug = "m_" + slug
    return slug


def _constructor_defaults(cls: type) -> dict[str, Any]:
    """Each keyword of the constructors along ``cls``'s MRO, with its default (the first one wins)."""
    defaults: dict[str, Any] = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None:
            continue
        try:
            parameters = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):  # a C-level __init__: no keywords to read
            continue
        for parameter in parameters:
            if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                default = _NO_DEFAULT if parameter.default is parameter.empty else parameter.default
                defaults.setdefault(parameter.name, default)
    return defaults


def class_path(cls: type, imports: Imports) -> str:
    """``peewee.CharField`` / ``playhouse.postgres_ext.BinaryJSONField``, recording the import."""
    imports.modules.add(cls.__module__)
    return f"{cls.__module__}.{cls.__qualname__}"


def literal(value: Any, imports: Imports) -> str | None:
    """``value`` as Python source, or None when it has no faithful literal."""
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, decimal.Decimal):
        imports.modules.add("decimal")
        return f"decimal.Decimal({str(value)!r})"
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta)):
        imports.modules.add("datetime")
        return repr(value)  # datetime.datetime(2024, 1, 1, 0, 0)
    if isinstance(value, uuid.UUID):
        imports.modules.add("uuid")
        return f"uuid.UUID({str(value)!r})"
    if callable(value):
        return _callable(value, imports)
    return None


def _callable(value: Any, imports: Imports) -> str | None:
    """``uuid.uuid4`` / ``datetime.datetime.now``: an importable function or class method, else None."""
    owner = getattr(value, "__self__", None)
    module: str | None
    if isinstance(owner, type):  # a method bound to a class (datetime.datetime.now)
        module, name = owner.__module__, f"{owner.__qualname__}.{value.__name__}"
    else:
        module, name = getattr(value, "__module__", None), str(getattr(value, "__qualname__", ""))
    if not module or not name or "<" in name or module == "__main__":
        return None
    imports.modules.add(module)
    return f"{module}.{name}"


def _argument(fld: peewee.Field, name: str, default: Any, imports: Imports) -> str | None:
    value = getattr(fld, name, _NO_DEFAULT)
    if value is _NO_DEFAULT or (
        default is not _NO_DEFAULT and value == default and name not in ALWAYS_WRITTEN
    ):
        return None
    if name == "default" and value is None:
        return None
    text = literal(value, imports)
    if text is None:
        imports.notes.append(f"{fld.model._meta.table_name}.{fld.column_name}: {name}={value!r} not rendered")
        return None
    return f"{name}={text}"


def _foreign_key_arguments(fld: peewee.ForeignKeyField, frozen: dict[type, str]) -> list[str]:
    target = "'self'" if fld.rel_model is fld.model else frozen[fld.rel_model]
    out = [target, f"field={fld.rel_field.name!r}", "backref='+'"]
    for name in ("on_delete", "on_update"):
        if getattr(fld, name, None):
            out.append(f"{name}={getattr(fld, name)!r}")
    return out


def field_source(
    fld: peewee.Field, imports: Imports, frozen: dict[type, str], *, in_model: bool = True
) -> str:
    """The constructor call that builds ``fld`` again; ``in_model``: in a class (column_name if unusual)."""
    cls = type(fld)
    args: list[str] = []
    if isinstance(fld, peewee.ForeignKeyField):
        args.extend(_foreign_key_arguments(fld, frozen))
    for name, default in _constructor_defaults(cls).items():
        if name in FIELD_ARGUMENTS and not (name == "index" and isinstance(fld, peewee.ForeignKeyField)):
            text = _argument(fld, name, default, imports)
            if text is not None:
                args.append(text)
    if isinstance(fld, peewee.ForeignKeyField) and not fld.index and not fld.unique:
        args.append("index=False")
    implied = fld.name + "_id" if isinstance(fld, peewee.ForeignKeyField) else fld.name
    if in_model and fld.column_name != implied:
        args.append(f"column_name={fld.column_name!r}")
    return f"{class_path(cls, imports)}({', '.join(args)})"


def frozen_closure(models: Iterable[type[peewee.Model]]) -> list[type[peewee.Model]]:
    """``models`` and every model their foreign keys reach, in dependency order."""
    seen: dict[type[peewee.Model], None] = {}
    stack = list(models)
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen[model] = None
        stack.extend(f.rel_model for f in model._meta.sorted_fields if isinstance(f, peewee.ForeignKeyField))
    return list(sort_models(list(seen)))


def frozen_names(models: Iterable[type[peewee.Model]]) -> dict[type, str]:
    """A unique class name per model in the generated module (``_Task``, ``_Task_2``)."""
    names: dict[type, str] = {}
    used: set[str] = set()
    for model in models:
        base = "_" + re.sub(r"\W", "_", model.__name__)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        names[model] = name
    return names


def _meta_indexes(model: type[peewee.Model], imports: Imports) -> str | None:
    specs = []
    for spec in model._meta.indexes:
        if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[0], (tuple, list)):
            specs.append(f"({tuple(spec[0])!r}, {bool(spec[1])!r})")
        else:
            imports.notes.append(f"{model._meta.table_name}: index {spec!r} not rendered: add it by hand")
    return f"({', '.join(specs)},)" if specs else None


def model_source(model: type[peewee.Model], imports: Imports, frozen: dict[type, str]) -> str:
    """A frozen copy of ``model``: its table name, fields and composite indexes, no database."""
    lines = [f"class {frozen[model]}(peewee.Model):"]
    for fld in model._meta.sorted_fields:
        lines.append(f"    {fld.name} = {field_source(fld, imports, frozen)}")
    lines += ["", "    class Meta:", f"        table_name = {model._meta.table_name!r}"]
    indexes = _meta_indexes(model, imports)
    if indexes:
        lines.append(f"        indexes = {indexes}")
    if model._meta.primary_key is False:
        lines.append("        primary_key = False")
    return "\n".join(lines)
