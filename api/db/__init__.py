"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.connection import connect, db_type
from api.db.errors import ErrorCategory, StandardErrorHandler, categorize_error
from api.db.exceptions import (
    ApiDbError,
    ConfigurationError,
    DatabaseUnavailable,
    DriverNotInstalled,
    IncompatibleExtensionError,
    InvalidDatabaseURL,
    UnsupportedCapability,
    VectorDimensionError,
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
