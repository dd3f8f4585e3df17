"""Six migrations covering every reversible operation of ``m``, and a child process migrating or rolling back.

``python rollback_app.py URL migrate|rollback`` prints its report as JSON (the lock tests start two at once).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import peewee  # noqa: E402
from peewee import CharField, ForeignKeyField, IntegerField, Model  # noqa: E402

from api.db import Migration, connect, migrate_db  # noqa: E402


class Author(Model):
    name = CharField(max_length=40)
    bio = CharField(max_length=40, null=True)

    class Meta:
        table_name = "author"


class Book(Model):
    title = CharField(max_length=40)
    author = ForeignKeyField(Author, backref="books")

    class Meta:
        table_name = "book"


class Tag(Model):
    label = CharField(max_length=20)

    class Meta:
        table_name = "tag"


def third(m: Any) -> None:
    m.add_column("author", "age", IntegerField(default=0))
    m.add_index("author", ("name",))
    m.create_tables(Tag)


def fourth(m: Any) -> None:
    m.rename_column("author", "bio", "biography")
    m.drop_not_null("author", "age")
    m.drop_column_default("author", "age")


def fifth(m: Any) -> None:
    m.alter_column_type("book", "title", CharField(max_length=200))
    m.add_column_default("book", "title", "untitled")
    m.add_column("book", "pages", IntegerField(null=True, default=0))
    m.add_not_null("book", "pages")


def sixth(m: Any) -> None:
    m.add_column("book", "editor_id", IntegerField(null=True))
    if m.engine != "sqlite":  # playhouse cannot add a foreign key to an SQLite table
        m.add_foreign_key_constraint("book", "editor_id", "author", "id")
    m.rename_table("book", "volume")


MIGRATIONS = [
    ("create_author", lambda m: m.create_tables(Author)),
    ("create_book", lambda m: m.create_tables(Book)),
    Migration("age_and_index", third),
    Migration("rename_and_relax", fourth),
    Migration("retype_title", fifth),
    Migration("editor_and_rename", sixth),
]

# The same names with the up functions edited after they were applied (drift).
EDITED = [(m[0], lambda m: None) for m in MIGRATIONS]


def main() -> int:
    db = connect(sys.argv[1])
    if sys.argv[2] == "migrate":
        report: Any = migrate_db(db, MIGRATIONS, lock_timeout=120)
    else:
        from api.db.migrate.rollback import rollback_db

        report = rollback_db(db, MIGRATIONS, steps=2, lock_timeout=120)
    time.sleep(0.2)
    print(json.dumps(report.to_dict()))
    getattr(db, "close_all", db.close)()
    return 0


if __name__ == "__main__":
    _ = peewee
    sys.exit(main())
