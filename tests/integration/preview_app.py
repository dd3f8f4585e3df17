"""Models for ``python -m api.db verify`` tests: the ``item`` table of boot_child.MIGRATIONS."""

from __future__ import annotations

from peewee import CharField, IntegerField, Model


class Item(Model):
    id = IntegerField(primary_key=True)
    name = CharField(max_length=20, null=True)
    size = IntegerField(null=True)
    label = CharField(max_length=40, null=True)
    kind = CharField(max_length=20, index=True)

    class Meta:
        table_name = "item"


class ItemWithColor(Item):
    color = CharField(max_length=10, null=True)

    class Meta:
        table_name = "item"


MODELS = [Item]
MODELS_AHEAD = [ItemWithColor]  # a release whose migration has not run yet
