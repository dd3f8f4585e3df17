"""Model sets for the makemigration round trips: every field type peewee ships, and an older schema."""

from __future__ import annotations

import datetime
import decimal
import uuid

import peewee
from playhouse.postgres_ext import BinaryJSONField, JSONField


class Owner(peewee.Model):
    name = peewee.CharField(max_length=80, unique=True)
    joined = peewee.DateTimeField(default=datetime.datetime.now)

    class Meta:
        table_name = "mk_owner"


class Item(peewee.Model):
    id = peewee.BigAutoField()
    owner = peewee.ForeignKeyField(Owner, backref="items", on_delete="CASCADE")
    title = peewee.CharField(max_length=200, index=True)
    code = peewee.FixedCharField(max_length=8, null=True)
    body = peewee.TextField(null=True)
    count = peewee.IntegerField(default=0)
    big = peewee.BigIntegerField(null=True)
    small = peewee.SmallIntegerField(default=1)
    ratio = peewee.FloatField(null=True)
    precise = peewee.DoubleField(null=True)
    price = peewee.DecimalField(max_digits=12, decimal_places=2, default=decimal.Decimal("0.00"))
    flag = peewee.BooleanField(default=False)
    token = peewee.UUIDField(default=uuid.uuid4)
    raw_token = peewee.BinaryUUIDField(null=True)
    payload = peewee.BlobField(null=True)
    created = peewee.DateTimeField(default=datetime.datetime(2024, 1, 1))
    day = peewee.DateField(null=True)
    at = peewee.TimeField(null=True)
    stamp = peewee.TimestampField(null=True)
    address = peewee.IPField(null=True)

    class Meta:
        table_name = "mk_item"
        indexes = ((("owner", "title"), True),)


MODELS = [Owner, Item]


class Doc(peewee.Model):
    data = JSONField(null=True)
    bdata = BinaryJSONField(null=True)

    class Meta:
        table_name = "mk_doc"


PG_MODELS = [Owner, Item, Doc]


# -- the older schema: Item without some columns, a column since renamed, one dropped, types and nulls
class OldOwner(peewee.Model):
    name = peewee.CharField(max_length=80, unique=True)
    joined = peewee.DateTimeField(default=datetime.datetime.now)

    class Meta:
        table_name = "mk_owner"


class OldItem(peewee.Model):
    id = peewee.BigAutoField()
    owner_id = peewee.IntegerField()  # no foreign key yet
    heading = peewee.CharField(max_length=200, index=True)  # renamed to title
    count = peewee.IntegerField(null=True)  # becomes NOT NULL
    big = peewee.IntegerField(null=True)  # becomes BIGINT
    small = peewee.SmallIntegerField(default=1, index=True)  # the index goes
    obsolete = peewee.CharField(null=True)  # dropped
    body = peewee.TextField()  # becomes nullable

    class Meta:
        table_name = "mk_item"


OLD_MODELS = [OldOwner, OldItem]
