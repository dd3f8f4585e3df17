"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.engines import db_type
from api.db.engines.compat import DatabaseCompat, using_database
from api.db.engines.info import ServerInfo, server_info
from api.db.error_handler import ErrorCategory, StandardErrorHandler
from api.db.exceptions import (
    ApiDbError,
    ConcurrentIndexInTransaction,
    ConfigurationError,
    ConnectionRejected,
    DatabaseUnavailable,
    DDLLockTimeout,
    DriverNotInstalled,
    IncompatibleExtensionError,
    InvalidDatabaseURL,
    MigrationDeclarationError,
    MigrationError,
    MigrationLockTimeout,
    PoolTimeout,
    UnrenderableDefault,
    UnsupportedCapability,
    VectorDimensionError,
)
from api.db.health.checks import (
    DatabaseHealth,
    HealthChecker,
    check_database_health,
    check_database_health_async,
)
from api.db.health.preflight import ExtendedPreflightReport, get_extended_diagnostics
from api.db.health.wsgi import health_app
from api.db.migrate.alter import alter_db_add_column, alter_db_column_type, alter_db_rename_column
from api.db.migrate.declarations import Migration
from api.db.migrate.lock import migration_lock
from api.db.migrate.migrator import Migrator
from api.db.migrate.runner import MigrationReport, migrate_db
from api.db.migrate.status import migration_status, pending_migrations
from api.db.migrate.tracker import MigrationTracker
from api.db.pool.config import DatabaseConfig, PoolConfig, RetryConfig, load_config
from api.db.pool.connect import connect
from api.db.pool.diagnostics import PoolDiagnostics, log_connection_config, start_health_monitoring
from api.db.preview.preview import MigrationPreview, preview_migration
from api.db.redact import redact_url
from api.db.schema.blockers import BlockingSession
from api.db.schema.ddl import LockSettings, safe_schema_migrator
from api.db.schema.fields import (
    DataBaseModel,
    FieldWarning,
    get_equivalent_type,
    validate_field_for_db,
    validate_models,
)
from api.db.schema.pgvector import (
    CompatibilityResult,
    check_pgvector,
    check_pgvector_compatibility,
    plan_vector_column,
)
from api.db.schema.verify import SchemaReport, verify_schema

__all__ = [
    "verify_schema",
    "SchemaReport",
    "get_extended_diagnostics",
    "ExtendedPreflightReport",
    "DatabaseHealth",
    "HealthChecker",
    "check_database_health",
    "check_database_health_async",
    "health_app",
    "PoolTimeout",
    "ConnectionRejected",
    "start_health_monitoring",
    "log_connection_config",
    "PoolDiagnostics",
    "load_config",
    "RetryConfig",
    "PoolConfig",
    "DatabaseConfig",
    "ApiDbError",
    "BlockingSession",
    "CompatibilityResult",
    "ConcurrentIndexInTransaction",
    "ConfigurationError",
    "DDLLockTimeout",
    "DataBaseModel",
    "DatabaseCompat",
    "DatabaseUnavailable",
    "DriverNotInstalled",
    "ErrorCategory",
    "FieldWarning",
    "IncompatibleExtensionError",
    "InvalidDatabaseURL",
    "LockSettings",
    "Migration",
    "MigrationDeclarationError",
    "MigrationError",
    "MigrationLockTimeout",
    "MigrationReport",
    "MigrationTracker",
    "Migrator",
    "ServerInfo",
    "StandardErrorHandler",
    "UnrenderableDefault",
    "UnsupportedCapability",
    "VectorDimensionError",
    "alter_db_add_column",
    "alter_db_column_type",
    "alter_db_rename_column",
    "check_pgvector",
    "check_pgvector_compatibility",
    "connect",
    "db_type",
    "get_equivalent_type",
    "migrate_db",
    "migration_lock",
    "migration_status",
    "pending_migrations",
    "plan_vector_column",
    "redact_url",
    "safe_schema_migrator",
    "server_info",
    "using_database",
    "validate_field_for_db",
    "validate_models",
    "MigrationPreview",
    "preview_migration",
]
