"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.connection import connect, db_type
from api.db.errors import ErrorCategory, StandardErrorHandler, categorize_error
from api.db.exceptions import (
    ApiDbError,
    ConfigurationError,
    DatabaseUnavailable,
    DriverNotInstalled,
    InvalidDatabaseURL,
    MigrationDeclarationError,
    MigrationError,
    MigrationLockTimeout,
    UnsupportedCapability,
)
from api.db.info import ServerInfo, server_info
from api.db.lock import migration_lock
from api.db.migrations import (
    Migration,
    MigrationReport,
    Migrator,
    alter_db_add_column,
    alter_db_column_type,
    alter_db_rename_column,
    migrate_db,
)
from api.db.redact import redact_url
from api.db.status import migration_status, pending_migrations
from api.db.tracker import MigrationTracker

__all__ = [
    "ApiDbError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DriverNotInstalled",
    "ErrorCategory",
    "InvalidDatabaseURL",
    "Migration",
    "MigrationDeclarationError",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationReport",
    "MigrationTracker",
    "Migrator",
    "ServerInfo",
    "StandardErrorHandler",
    "UnsupportedCapability",
    "alter_db_add_column",
    "alter_db_column_type",
    "alter_db_rename_column",
    "categorize_error",
    "connect",
    "db_type",
    "migrate_db",
    "migration_lock",
    "migration_status",
    "pending_migrations",
    "redact_url",
    "server_info",
]
