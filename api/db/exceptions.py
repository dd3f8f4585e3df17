"""The exception hierarchy of api.db.

Every error the package raises on purpose derives from :class:`ApiDbError`, so
an application (and the CLI) can catch one name. Each class also subclasses the
closest builtin, so generic handlers (``ValueError``, ``TimeoutError``) keep
working. Driver errors are never replaced silently: where one is wrapped, the
original is kept on ``.orig``.
"""

from __future__ import annotations

from playhouse.pool import MaxConnectionsExceeded


class ApiDbError(Exception):
    """Base class of every error raised by api.db."""


class ConfigurationError(ApiDbError, ValueError):
    """A setting, URL or declaration is invalid; nothing was done."""


class InvalidDatabaseURL(ConfigurationError):
    """The database URL is malformed or names an unsupported scheme."""


class DriverNotInstalled(ConfigurationError, ImportError):
    """The DB-API driver that the URL's engine needs is not importable."""


class DatabaseUnavailable(ApiDbError, ConnectionError):
    """The database could not be reached or refused the connection."""

    def __init__(self, message: str, *, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.orig = orig


class UnsupportedCapability(ApiDbError):
    """The engine or server version lacks a capability; names the version that has it.

    Raised inside a migration (by ``DatabaseCompat.require`` or the ``requires``
    decorator), it makes ``migrate_db`` record the migration ``skipped`` with this text.
    """

    def __init__(self, message: str, *, capability: str = "", required_version: str | None = None) -> None:
        super().__init__(message)
        self.capability = capability
        self.required_version = required_version


class PoolTimeout(ApiDbError, TimeoutError, MaxConnectionsExceeded):
    """No pooled connection became free within the acquire timeout; the message says who holds them."""


class ConnectionRejected(DatabaseUnavailable):
    """The server refused the credentials, database name or permissions; retrying cannot help."""
