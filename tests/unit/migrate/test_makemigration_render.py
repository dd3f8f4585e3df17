"""The pure parts of makemigration: names, --rename, field and model source, the module text."""

from __future__ import annotations

import datetime
import decimal
import uuid

import peewee
import pytest

from api.db.exceptions import ConfigurationError
from api.db.migrate.makemigration import (
    Change,
    MigrationPlan,
    _unique_names,
    parse_rename,
    render_module,
)
from api.db.migrate.render import (
    Imports,
    field_source,
    frozen_names,
    identifier,
    literal,
    model_source,
)


class Parent(peewee.Model):
    name = peewee.CharField(max_length=40, unique=True)

    class Meta:
        table_name = "parent"


class Child(peewee.Model):
    parent = peewee.ForeignKeyField(Parent, on_delete="CASCADE", null=True)
    price = peewee.DecimalField(max_digits=10, decimal_places=3, default=decimal.Decimal("1.50"))
    token = peewee.UUIDField(default=uuid.uuid4)
    seen = peewee.DateTimeField(default=datetime.datetime.now, column_name="seen_at")

    class Meta:
        table_name = "child"
        indexes = ((("parent", "price"), True),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("add_column_Task_Priority", "add_column_task_priority"), ("drop index x-y", "drop_index_x_y"),
     ("0002 x", "m_0002_x"), ("class", "m_class"), ("", "change")],
)
def test_identifier(text: str, expected: str) -> None:
    assert identifier(text) == expected


def test_parse_rename() -> None:
    assert parse_rename("task.title:name") == ("task", "title", "name")
    assert parse_rename("app.task.title:name") == ("app.task", "title", "name")
    for bad in ("task.title", "title:name", "task.:name", "task.title:"):
        with pytest.raises(ConfigurationError, match="expected table.old:new"):
            parse_rename(bad)


def test_literals() -> None:
    imports = Imports()
    assert literal(decimal.Decimal("1.50"), imports) == "decimal.Decimal('1.50')"
    assert literal(datetime.datetime.now, imports) == "datetime.datetime.now"
    assert literal(uuid.uuid4, imports) == "uuid.uuid4"
    assert literal(uuid.UUID(int=1), imports) == "uuid.UUID('00000000-0000-0000-0000-000000000001')"
    assert literal(lambda: 1, imports) is None and literal(object(), imports) is None
    assert imports.lines() == ["import datetime", "import decimal", "import uuid", "", "import peewee"]


def test_field_and_model_source() -> None:
    imports = Imports()
    frozen = frozen_names([Parent, Child])
    assert frozen == {Parent: "_Parent", Child: "_Child"}
    fk = field_source(Child.parent, imports, frozen)
    assert fk == "peewee.ForeignKeyField(_Parent, field='id', backref='+', on_delete='CASCADE', null=True)"
    assert field_source(Child.seen, imports, frozen) == (
        "peewee.DateTimeField(default=datetime.datetime.now, column_name='seen_at')"
    )
    assert field_source(Child.seen, imports, frozen, in_model=False) == (
        "peewee.DateTimeField(default=datetime.datetime.now)"
    )
    source = model_source(Child, imports, frozen)
    assert "class _Child(peewee.Model):" in source and "table_name = 'child'" in source
    assert "indexes = ((('parent', 'price'), True),)" in source
    assert "peewee.DecimalField(max_digits=10, decimal_places=3, default=decimal.Decimal('1.50'))" in source


def test_unique_names_and_module() -> None:
    changes = [Change("add_index_t_a", ("m.add_index('t', ('a',), False)",)),
               Change("add_index_t_a", ("m.add_index('t', ('a',), True)",), note="again")]
    _unique_names(changes)
    assert [c.name for c in changes] == ["add_index_t_a", "add_index_t_a_2"]
    plan = MigrationPlan(changes=changes, undecided=["column t.b is not in the models"])
    text = render_module(plan, source_spec="app:MODELS", prefix="0003.")
    assert "Migration('0003.add_index_t_a_2', add_index_t_a_2)," in text
    assert "    # again\n" in text and "# - column t.b is not in the models" in text
    compile(text, "generated.py", "exec")
