"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications.

The names below are the public API, each with a line in README.md; everything else is
importable from its sub-package (``api.db.engines``, ``migrate``, ``schema``, ``preview``,
``pool``, ``health``), laid out in docs/ARCHITECTURE.md.
"""

from api.db.engines.compat import DatabaseCompat
from api.db.engines.info import server_info
from api.db.error_handler import ErrorCategory, StandardErrorHandler
from api.db.exceptions import (
    ApiDbError,
    ConfigurationError,
    DDLLockTimeout,
    MigrationError,
    MigrationLockTimeout,
    PoolTimeout,
    UnsupportedCapability,
)
from api.db.health.asgi import health_asgi_app
from api.db.health.checks import check_database_health
from api.db.health.preflight import get_extended_diagnostics
from api.db.health.wsgi import health_app
from api.db.migrate.aio import migrate_db_async
from api.db.migrate.alter import alter_db_add_column
from api.db.migrate.declarations import Migration
from api.db.migrate.runner import migrate_db
from api.db.migrate.status import migration_status
from api.db.migrate.tracker import MigrationTracker
from api.db.pool.connect import connect
from api.db.pool.diagnostics import PoolDiagnostics, start_health_monitoring
from api.db.preview.preview import preview_migration
from api.db.redact import install_log_filter, register_secret
from api.db.schema.fields import DataBaseModel, validate_field_for_db
from api.db.schema.pgvector import check_pgvector
from api.db.schema.verify import verify_schema

install_log_filter()  # every api.db.* logger imported above masks known secrets before its handlers run

__all__ = [
    "ApiDbError",
    "ConfigurationError",
    "DDLLockTimeout",
    "DataBaseModel",
    "DatabaseCompat",
    "ErrorCategory",
    "Migration",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationTracker",
    "PoolDiagnostics",
    "PoolTimeout",
    "StandardErrorHandler",
    "UnsupportedCapability",
    "alter_db_add_column",
    "check_database_health",
    "check_pgvector",
    "connect",
    "get_extended_diagnostics",
    "health_app",
    "health_asgi_app",
    "migrate_db",
    "migrate_db_async",
    "migration_status",
    "preview_migration",
    "register_secret",
    "server_info",
    "start_health_monitoring",
    "validate_field_for_db",
    "verify_schema",
]
