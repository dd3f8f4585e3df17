"""The field warnings describe what the live engine really does with such a model."""

from __future__ import annotations

import peewee
import pytest

from api.db import DataBaseModel
from api.db.engines import db_type

LONG_NAME = "a_column_name_that_is_far_too_long_for_mysql_and_postgres_alike_x"  # 66 characters


def test_identifier_over_the_limit(db: peewee.Database) -> None:
    class Wide(DataBaseModel):
        value = peewee.IntegerField(null=True, column_name=LONG_NAME)

        class Meta:
            database = db
            table_name = "wide"

    warned = [w for w in Wide.validate_fields() if w.code == "identifier_too_long"]
    try:
        db.create_tables([Wide])
        columns = [c.name for c in db.get_columns("wide")]
    except peewee.DatabaseError:
        columns = []
    engine = db_type(db)
    if engine == "sqlite":
        assert warned == [] and LONG_NAME in columns
    elif engine == "postgres":
        assert warned and LONG_NAME not in columns and LONG_NAME[:63] in columns  # silently truncated
    else:
        assert warned and columns == []  # refused: error 1059


@pytest.mark.engines("mysql")
def test_indexed_long_text_on_mysql(db: peewee.Database) -> None:
    class Post(DataBaseModel):
        slug = peewee.CharField(max_length=1024, index=True)
        body = peewee.TextField(index=True)

        class Meta:
            database = db
            table_name = "post"

    codes = {(w.field, w.code) for w in Post.validate_fields()}
    assert codes == {("slug", "index_key_too_long"), ("body", "text_index_needs_prefix")}
    try:
        db.create_tables([Post])
    except peewee.DatabaseError:
        return  # MySQL refuses these indexes outright (1071 / 1170): the warnings were right
    prefixes = dict(db.execute_sql(
        "SELECT COLUMN_NAME, SUB_PART FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() "
        "AND TABLE_NAME = 'post' AND COLUMN_NAME IN ('slug', 'body')"
    ).fetchall())
    assert prefixes == {"slug": 768, "body": 768}, "MariaDB shortened both indexes to a prefix, as warned"
