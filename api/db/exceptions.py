"""The exception hierarchy of api.db.

Every error the package raises on purpose derives from :class:`ApiDbError`, so
an application (and the CLI) can catch one name. Each class also subclasses the
closest builtin, so generic handlers (``ValueError``, ``TimeoutError``) keep
working. Driver errors are never replaced silently: where one is wrapped, the
original is kept on ``.orig``.
"""

from __future__ import annotations

from playhouse.pool import MaxConnectionsExceeded

from api.db.redact import redact_text


class ApiDbError(Exception):
    """Base class of every error raised by api.db; its text never shows a known secret."""

    def __str__(self) -> str:
        return redact_text(super().__str__())


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


class IncompatibleExtensionError(ApiDbError):
    """An installed extension version is known to be unsafe; upgrade it."""


class VectorDimensionError(ConfigurationError):
    """No pgvector column type can hold the requested dimensions with the wanted index."""


class UnrenderableDefault(ConfigurationError):
    """A column default cannot be written as a constant SQL literal for this engine."""


class DDLLockTimeout(ApiDbError, TimeoutError):
    """A DDL statement could not get its table lock within the bounded wait, after every retry.

    ``blockers`` lists the sessions that held the lock when it gave up (``BlockingSession``
    records from ``api.db.schema.blockers``); the driver's last error is kept on ``orig``.
    """

    def __init__(
        self,
        message: str,
        *,
        statement: str = "",
        table: str | None = None,
        attempts: int = 0,
        lock_timeout: float = 0.0,
        blockers: list[object] | None = None,
        orig: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.statement = statement
        self.table = table
        self.attempts = attempts
        self.lock_timeout = lock_timeout
        self.blockers = list(blockers or [])
        self.orig = orig


class ConcurrentIndexInTransaction(ApiDbError, RuntimeError):
    """CREATE/DROP INDEX CONCURRENTLY was asked for inside a transaction, where PostgreSQL refuses it."""


class SchemaConflict(ApiDbError):
    """The catalog contradicts a schema operation (an index name taken, a column missing); says which object.

    ``category`` is an error category value (``duplicate_index``, ``missing_column``...), as
    :class:`MigrationError` carries it; ``statement`` the statement that was not sent, if any.
    """

    def __init__(
        self, message: str, *, category: str, table: str | None = None, statement: str | None = None
    ) -> None:
        super().__init__(message)
        self.category = category
        self.table = table
        self.statement = statement


class MissingPrimaryKey(ConfigurationError):
    """``m.backfill`` needs a single-column primary key to walk a table in ranges; ``table`` has none."""

    def __init__(self, message: str, *, table: str) -> None:
        super().__init__(message)
        self.table = table


class MigrationDeclarationError(ConfigurationError):
    """The list of migrations is invalid (empty or duplicate name, not callable...); nothing was run."""


class MigrationError(ApiDbError, RuntimeError):
    """A migration failed; names the migration, the error category and the failing statement.

    The driver error is kept on ``orig``. ``completed`` lists the operations that
    stayed applied (only where the engine cannot roll DDL back: MySQL/MariaDB, or
    a migration declared ``atomic=False``).
    """

    def __init__(
        self,
        message: str,
        *,
        migration: str = "",
        category: str = "unknown",
        statement: str | None = None,
        completed: tuple[str, ...] = (),
        orig: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.migration = migration
        self.category = category
        self.statement = statement
        self.completed = completed
        self.orig = orig


class MigrationLockTimeout(ApiDbError, TimeoutError):
    """The migration lock stayed held by another session beyond ``lock_timeout``; names the holder."""

    def __init__(self, message: str, *, holder: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.holder = holder or {}


class MigrationLockLost(ApiDbError, RuntimeError):
    """This process no longer holds the migration lock it took; it stopped and wrote nothing more.

    ``strategy`` is ``lease`` or ``advisory``; ``owner`` the lease token or ``session:<id>``.
    """

    def __init__(self, message: str, *, strategy: str = "", owner: str = "") -> None:
        super().__init__(message)
        self.strategy = strategy
        self.owner = owner


class PoolTimeout(ApiDbError, TimeoutError, MaxConnectionsExceeded):
    """No pooled connection became free within the acquire timeout; the message says who holds them."""


class ConnectionRejected(DatabaseUnavailable):
    """The server refused the credentials, database name or permissions; retrying cannot help."""


class RehearsalError(ApiDbError, RuntimeError):
    """A rehearsal could not copy the target into a scratch database; nothing on the target changed."""


class ScratchDatabaseDenied(RehearsalError, PermissionError):
    """The scratch database of a rehearsal cannot be created: ``privilege`` names what the user needs."""

    def __init__(self, message: str, *, privilege: str, orig: BaseException | None = None) -> None:
        super().__init__(message)
        self.privilege = privilege
        self.orig = orig


class ReadOnlyDatabase(ApiDbError, PermissionError):
    """The database refuses writes (a standby, a read-only setting or file); ``reason`` says which."""

    def __init__(self, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class IrreversibleMigration(MigrationError):
    """A rollback would pass through a migration without a safe inverse; nothing was changed."""

    def __init__(self, message: str, *, migration: str, operation: str) -> None:
        super().__init__(message, migration=migration, category="irreversible")
        self.operation = operation


class NoHealthyReplica(DatabaseUnavailable):
    """A read was routed with ``replica_fallback=fail`` and no replica answers within the lag bound."""
