"""api.db: safe boot-time migrations and connection-pool diagnostics for Peewee applications."""

from api.db.connection import connect, db_type
from api.db.errors import ErrorCategory, StandardErrorHandler, categorize_error
from api.db.exceptions import (
    ApiDbError,
    ConfigurationError,
    DatabaseUnavailable,
    DriverNotInstalled,
    InvalidDatabaseURL,
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
]
