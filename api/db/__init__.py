"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.config import DatabaseConfig, PoolConfig, RetryConfig, load_config
from api.db.connection import connect, db_type
from api.db.diagnostics import PoolDiagnostics, log_connection_config, start_health_monitoring
from api.db.errors import ErrorCategory, StandardErrorHandler, categorize_error
from api.db.exceptions import (
    ApiDbError,
    ConfigurationError,
    ConnectionRejected,
    DatabaseUnavailable,
    DriverNotInstalled,
    InvalidDatabaseURL,
    PoolTimeout,
    UnsupportedCapability,
)
from api.db.info import ServerInfo, server_info
from api.db.redact import redact_url

__all__ = [
    "ApiDbError",
    "ConfigurationError",
    "DatabaseUnavailable",
    "DriverNotInstalled",
    "ErrorCategory",
    "InvalidDatabaseURL",
    "ServerInfo",
    "StandardErrorHandler",
    "UnsupportedCapability",
    "categorize_error",
    "connect",
    "db_type",
    "redact_url",
    "server_info",
    "ConnectionRejected",
    "DatabaseConfig",
    "PoolConfig",
    "PoolDiagnostics",
    "PoolTimeout",
    "RetryConfig",
    "load_config",
    "log_connection_config",
    "start_health_monitoring",
]
