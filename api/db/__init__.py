"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.blockers import BlockingSession
from api.db.compat import DatabaseCompat, using_database
from api.db.connection import connect, db_type
from api.db.ddl import LockSettings, safe_schema_migrator
from api.db.errors import ErrorCategory, StandardErrorHandler, categorize_error
from api.db.exceptions import (
    ApiDbError,
    ConcurrentIndexInTransaction,
    ConfigurationError,
    DatabaseUnavailable,
    DDLLockTimeout,
    DriverNotInstalled,
    IncompatibleExtensionError,
    InvalidDatabaseURL,
    UnrenderableDefault,
    UnsupportedCapability,
    VectorDimensionError,
)
from api.db.fields import (
    DataBaseModel,
    FieldWarning,
    get_equivalent_type,
    validate_field_for_db,
    validate_models,
)
from api.db.info import ServerInfo, server_info
from api.db.pgvector import (
    CompatibilityResult,
    check_pgvector,
    check_pgvector_compatibility,
    plan_vector_column,
)
from api.db.redact import redact_url

__all__ = [
    "ApiDbError",
    "CompatibilityResult",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DriverNotInstalled",
    "IncompatibleExtensionError",
    "ErrorCategory",
    "InvalidDatabaseURL",
    "ServerInfo",
    "StandardErrorHandler",
    "UnsupportedCapability",
    "VectorDimensionError",
    "categorize_error",
    "check_pgvector",
    "check_pgvector_compatibility",
    "connect",
    "db_type",
    "plan_vector_column",
    "redact_url",
    "server_info",
]

__all__ += [
    "BlockingSession",
    "ConcurrentIndexInTransaction",
    "DDLLockTimeout",
    "DataBaseModel",
    "DatabaseCompat",
    "FieldWarning",
    "LockSettings",
    "UnrenderableDefault",
    "get_equivalent_type",
    "safe_schema_migrator",
    "using_database",
    "validate_field_for_db",
    "validate_models",
]
