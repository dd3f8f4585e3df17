"""``alter_db_*``: one-call helpers for applications coming from the alter-and-ignore pattern.

Each runs one schema change now and answers True when it is in effect (done now or
already done) and False, logged at ERROR by :class:`StandardErrorHandler`, otherwise.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import peewee
from playhouse.migrate import SchemaMigrator

from api.db.engines import engine_for
from api.db.error_handler import (
    ALREADY_PRESENT,
    StandardErrorHandler,
    already_applied,
    classify_error,
)
from api.db.exceptions import ConfigurationError, SchemaConflict
from api.db.migrate.adoption import adoption_verdict
from api.db.migrate.migrator import Migrator, StatementLog, make_schema_migrator

logger = logging.getLogger(__name__)


def _schema_migrator(migrator: Any) -> SchemaMigrator:
    if isinstance(migrator, Migrator):
        return migrator.schema_migrator
    if isinstance(migrator, SchemaMigrator):
        return migrator
    if isinstance(migrator, peewee.Database):
        return make_schema_migrator(migrator)
    raise ConfigurationError(
        f"expected a SchemaMigrator, a Migrator or a Database, got {type(migrator).__name__}"
    )


def _alter(migrator: Any, operation: str, table: str, column: str, *args: Any) -> bool:
    schema_migrator = _schema_migrator(migrator)
    db = schema_migrator.database
    engine = engine_for(db).name
    log = StatementLog()
    try:
        with log.capture(db), (db.savepoint() if db.in_transaction() else contextlib.nullcontext()):
            schema_migrator.migrate(getattr(schema_migrator, operation)(table, column, *args))
    except Exception as exc:  # classified and logged below; True only when it is safe to go on
        if operation == "add_column":
            return _column_in_effect(exc, schema_migrator, table, column, args, log.last)
        old_new = {"old_name": column, "new_name": args[0]} if operation == "rename_column" and args else {}
        if already_applied(exc, operation, db=db, db_type=engine, table=table, **old_new):
            logger.info("%s %s.%s: already done, skipping", operation, table, column)
            return True
        return StandardErrorHandler.handle_migration_error(
            exc, table, column, operation, engine, sql=log.last
        )
    return True


def _column_in_effect(
    exc: BaseException, schema_migrator: Any, table: str, column: str, args: tuple[Any, ...], sql: str | None
) -> bool:
    """True only when the catalog shows the column (compatible type and nullability)."""
    db = schema_migrator.database
    engine = engine_for(db).name
    try:
        verdict = adoption_verdict(db, schema_migrator, exc, "add_column", (table, column, *args), {}, sql)
    except SchemaConflict as conflict:
        logger.error("add_column %s.%s: %s", table, column, conflict)
        return False
    if verdict.in_effect:
        logger.info("add_column %s.%s: already in effect (checked in the catalog), skipping", table, column)
        return True
    if classify_error(exc, engine, sql).category in ALREADY_PRESENT:
        logger.error("add_column %s.%s: the column exists but differs from the field; not in effect",
                     table, column)
        return False
    return StandardErrorHandler.handle_migration_error(exc, table, column, "add_column", engine, sql=sql)


def alter_db_add_column(migrator: Any, table: str, column: str, field: peewee.Field) -> bool:
    """Add ``table.column``; True when added or already there, False (logged at ERROR) otherwise."""
    return _alter(migrator, "add_column", table, column, field)


def alter_db_column_type(migrator: Any, table: str, column: str, field: peewee.Field) -> bool:
    """Change the type of ``table.column``; True when done, False (logged) when the engine refused."""
    return _alter(migrator, "alter_column_type", table, column, field)


def alter_db_rename_column(migrator: Any, table: str, old_name: str, new_name: str) -> bool:
    """Rename ``table.old_name`` to ``new_name``; True when done or already done, False (logged) otherwise."""
    return _alter(migrator, "rename_column", table, old_name, new_name)
