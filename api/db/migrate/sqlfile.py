"""Split an SQL script into statements, the way the server would read it.

Semicolons end a statement only outside quotes, quoted identifiers, comments
and PostgreSQL dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``), so a
function body with semicolons inside stays one statement.
"""

from __future__ import annotations

import re
from pathlib import Path

from api.db.exceptions import ConfigurationError

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


class SQLFileError(ConfigurationError):
    """An SQL file is missing, unreadable or has an unterminated quote, comment or body."""


def split_sql(script: str) -> list[str]:
    """The statements of ``script``, each stripped, without the ending semicolon; comment-only parts dropped."""
    statements: list[str] = []
    current: list[str] = []
    meaningful = False  # has the current statement anything but comments and blanks?
    i, n = 0, len(script)
    while i < n:
        ch = script[i]
        nxt = script[i + 1] if i + 1 < n else ""
        if ch == "-" and nxt == "-":
            end = script.find("\n", i)
            end = n if end == -1 else end
            current.append(script[i:end])
            i = end
            continue
        if ch == "/" and nxt == "*":
            end = script.find("*/", i + 2)
            if end == -1:
                raise SQLFileError(f"unterminated /* comment starting at offset {i}")
            current.append(script[i : end + 2])
            i = end + 2
            continue
        if ch in ("'", '"', "`"):
            end = i + 1
            while True:
                end = script.find(ch, end)
                if end == -1:
                    raise SQLFileError(f"unterminated {ch} quote starting at offset {i}")
                if script[end + 1 : end + 2] == ch:  # doubled quote is an escaped quote
                    end += 2
                    continue
                if ch == "'" and script[end - 1] == "\\" and script[end - 2 : end] != "\\\\":
                    end += 1  # MySQL backslash escape
                    continue
                break
            current.append(script[i : end + 1])
            meaningful = True
            i = end + 1
            continue
        if ch == "$":
            match = _DOLLAR_TAG.match(script, i)
            if match and not (i > 0 and (script[i - 1].isalnum() or script[i - 1] == "_")):
                tag = match.group(0)
                end = script.find(tag, match.end())
                if end == -1:
                    raise SQLFileError(f"unterminated dollar-quoted body {tag} starting at offset {i}")
                current.append(script[i : end + len(tag)])
                meaningful = True
                i = end + len(tag)
                continue
        if ch == ";":
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
            i += 1
            continue
        current.append(ch)
        if not ch.isspace():
            meaningful = True
        i += 1
    if meaningful:
        statements.append("".join(current).strip())
    return statements


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
