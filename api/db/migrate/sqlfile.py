"""Read an SQL file into statements, the way the server would read it (see :mod:`api.db.migrate.sqltext`).

Semicolons end a statement only outside quotes, quoted identifiers, comments
and PostgreSQL dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``), so a
function body with semicolons inside stays one statement.
"""

from __future__ import annotations

from pathlib import Path

from api.db.exceptions import ConfigurationError
from api.db.migrate.sqltext import UnterminatedSQLError, split_statements


class SQLFileError(ConfigurationError):
    """An SQL file is missing, unreadable or has an unterminated quote, comment or body."""


def split_sql(script: str) -> list[str]:
    """The statements of ``script``, stripped, without the ending semicolon; comment-only parts dropped."""
    try:
        return split_statements(script)
    except UnterminatedSQLError as exc:
        raise SQLFileError(str(exc)) from None


def read_sql_file(path: str | Path) -> list[str]:
    """Read and split ``path``; SQLFileError names the path when it is missing or unreadable."""
    file = Path(path)
    if not file.is_file():
        raise SQLFileError(f"SQL file {file} does not exist (resolved from {Path.cwd()}); check the path")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SQLFileError(f"cannot read SQL file {file}: {exc}") from exc
    try:
        return split_sql(text)
    except SQLFileError as exc:
        raise SQLFileError(f"{file}: {exc}") from None
