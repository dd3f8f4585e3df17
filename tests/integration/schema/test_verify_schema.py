"""verify_schema on every engine: a matching schema is clean; a missing index, a wrong type,
a missing column, wrong nullability and a missing table are each found."""

from __future__ import annotations

import datetime
import uuid

import peewee

from api.db.schema.verify import verify_schema


def make_models(database: peewee.Database) -> tuple[type[peewee.Model], type[peewee.Model]]:
    class Base(peewee.Model):
        class Meta:
            pass

    class Owner(Base):
        name = peewee.CharField(max_length=100, unique=True)

        class Meta:
            table_name = "owner"

    class Document(Base):
        owner = peewee.ForeignKeyField(Owner, backref="documents")
        title = peewee.CharField(max_length=200, index=True)
        body = peewee.TextField(null=True)
        size = peewee.BigIntegerField(default=0)
        ratio = peewee.FloatField(default=0.0)
        public = peewee.BooleanField(default=False)
        token = peewee.UUIDField(default=uuid.uuid4)
        created = peewee.DateTimeField(default=datetime.datetime.now)

        class Meta:
            table_name = "document"
            indexes = ((("owner", "created"), False),)

    Base._meta.database = database
    Owner._meta.database = database
    Document._meta.database = database
    return Owner, Document


def test_matching_schema_is_clean(db) -> None:
    owner, document = make_models(db)
    db.create_tables([owner, document])
    report = verify_schema(db, [owner, document])
    assert report.ok, [str(d) for d in report.differences]
    assert report.differences == []


def test_each_kind_of_drift_is_found(db) -> None:
    owner, document = make_models(db)
    db.create_tables([owner])
    # The document table as an older release left it: no title index, no composite index,
    # size as text, body NOT NULL, no token column, and one column the models don't know.
    db.execute_sql(
        "CREATE TABLE document (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, title VARCHAR(200) NOT "
        "NULL, body TEXT NOT NULL, size TEXT NOT NULL, ratio REAL NOT NULL, public SMALLINT NOT NULL,"
        " created TIMESTAMP NOT NULL, legacy_flag INTEGER)"
        if db_kind(db) != "mysql"
        else "CREATE TABLE document (id INTEGER PRIMARY KEY, owner_id INTEGER NOT NULL, "
             "title VARCHAR(200) NOT NULL,"
        " body TEXT NOT NULL, size TEXT NOT NULL, ratio DOUBLE NOT NULL, public BOOL NOT NULL,"
        " created DATETIME NOT NULL, legacy_flag INTEGER)"
    )
    report = verify_schema(db, [owner, document])
    found = {(d.kind, d.column) for d in report.differences}
    assert ("missing_index", "title") in found
    assert ("missing_index", "owner_id,created") in found
    assert ("type_mismatch", "size") in found
    assert ("nullability", "body") in found
    assert ("missing_column", "token") in found
    assert ("extra_column", "legacy_flag") in found
    assert not report.ok
    assert report.to_dict()["ok"] is False


def test_missing_table_and_unique(db) -> None:
    owner, document = make_models(db)
    db.execute_sql("CREATE TABLE owner (id INTEGER PRIMARY KEY, name VARCHAR(100) NOT NULL)")
    db.execute_sql("CREATE INDEX owner_name ON owner (name)")
    report = verify_schema(db, [owner, document])
    kinds = {(d.kind, d.table, d.column) for d in report.differences}
    assert ("missing_table", "document", None) in kinds
    assert ("missing_unique", "owner", "name") in kinds


def db_kind(database: peewee.Database) -> str:
    from api.db.engines import db_type

    return db_type(database)
