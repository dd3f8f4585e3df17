"""Race-free creation of api.db's own tables (history, state, lock), by many booting processes at once.

``CREATE TABLE IF NOT EXISTS`` is not atomic everywhere: two PostgreSQL sessions creating the
same table at once can fail with a unique violation on ``pg_type``. Such an error is evidence
that someone else created it: the catalog is checked, and the creation retried for the indexes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import peewee

from api.db.engines import engine_for
from api.db.error_handler import ALREADY_PRESENT, ErrorCategory, classify_error

logger = logging.getLogger(__name__)

# What a concurrent creator of the same table can make CREATE TABLE IF NOT EXISTS say.
RACE_CATEGORIES = ALREADY_PRESENT | {
    ErrorCategory.CONSTRAINT_VIOLATION,  # PostgreSQL: pg_type_typname_nsp_index, pg_class_relname_nsp_index
    ErrorCategory.DEADLOCK,  # Galera: concurrent DDL on two nodes
    ErrorCategory.LOCK_TIMEOUT,  # SQLite: the other creator holds the file's write lock
}
CREATE_ATTEMPTS = 5


def create_tables_race_free(db: peewee.Database, models: Sequence[Any]) -> None:
    """Create ``models`` if they do not exist; a concurrent creator's error is checked against the catalog."""
    engine = engine_for(db).name
    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            db.create_tables(list(models), safe=True)
            return
        except peewee.DatabaseError as exc:
            info = classify_error(exc, engine)
            if info.category not in RACE_CATEGORIES or db.in_transaction():
                raise
            exists = all(db.table_exists(m._meta.table_name) for m in models)
            logger.debug(
                "creating %s met a concurrent creator (%s: %s); tables there: %s",
                ", ".join(m._meta.table_name for m in models), info.category.value, info.message, exists,
            )  # fmt: skip
            if attempt == CREATE_ATTEMPTS:
                if exists:
                    return
                raise
            time.sleep(0.05 * attempt)
