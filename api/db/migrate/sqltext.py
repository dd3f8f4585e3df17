"""SQL-text rules shared by migrations, previews and the error classifier: one definition each.

* :func:`strip_leading_comments`: blanks, ``-- line`` and ``/* block */`` comments before a statement.
* :func:`strip_statement_settings`: that, and MariaDB's ``SET STATEMENT ... FOR`` prefix.
* :func:`is_session_control` / :func:`is_transaction_control`: the plumbing the lock-safe
  migrator and peewee send around DDL, not a change of their own.
* :func:`is_transaction_boundary`: a statement that opens or ends a transaction (refused inside
  a transactional migration).
* :func:`tokenize` / :func:`split_statements`: a script cut into statements the way the server
  reads it. Semicolons end a statement only outside quotes, quoted identifiers, comments and
  PostgreSQL dollar-quoted bodies (``$$ ... $$``, ``$fn$ ... $fn$``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import NamedTuple

LEADING_COMMENTS = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)+", re.DOTALL)
# MariaDB: the lock-safe migrator sends DDL as SET STATEMENT lock_wait_timeout=N FOR <ddl>.
SET_STATEMENT = re.compile(r"^SET\s+STATEMENT\s+.*?\bFOR\s+", re.IGNORECASE | re.DOTALL)

# Savepoints and the lock-bound settings the lock-safe migrator wraps around DDL.
_SESSION_CONTROL = (
    r"SAVEPOINT\b|RELEASE\b|ROLLBACK\s+TO\b"
    r"|SET\s+(?:LOCAL\s+|SESSION\s+)?"
    r"(?:lock_timeout|lock_wait_timeout|innodb_lock_wait_timeout|statement_timeout)\b"
    r"|RESET\s+lock_timeout\b|PRAGMA\s+busy_timeout\b"
)
# Harmless inside a preview's read-only transaction (undone by its ROLLBACK) and needed for the
# migrator's code path to behave as in a real run. Never plain COMMIT or ROLLBACK: they would
# end that transaction.
SESSION_CONTROL = re.compile(rf"^(?:{_SESSION_CONTROL})", re.IGNORECASE)
# What is not a statement of the migration itself (the runner's statement log): session control
# plus transaction boundaries. The union of the two rules that existed before: the runner's knew
# BEGIN, COMMIT and plain ROLLBACK; the preview's knew innodb_lock_wait_timeout, statement_timeout
# and leading comments. So the log now also skips a migration's own SET statement_timeout.
# Statements that open or end a transaction (or switch autocommit), so that inside a migration's
# transaction they would commit or roll back work early. ROLLBACK TO (a savepoint) is not one.
_TRANSACTION_BOUNDARY = (
    r"BEGIN\b|START\s+TRANSACTION\b|COMMIT\b|END\b|ABORT\b|ROLLBACK\b(?!\s+TO\b)"
    r"|PREPARE\s+TRANSACTION\b|XA\b"
    r"|SET\s+(?:SESSION\s+|LOCAL\s+|GLOBAL\s+|@@(?:SESSION\.|LOCAL\.)?)?autocommit\b"
)
TRANSACTION_BOUNDARY = re.compile(rf"^(?:{_TRANSACTION_BOUNDARY})", re.IGNORECASE)
TRANSACTION_CONTROL = re.compile(rf"^(?:{_TRANSACTION_BOUNDARY}|{_SESSION_CONTROL})", re.IGNORECASE)


def strip_leading_comments(sql: str) -> str:
    """``sql`` without the blanks and comments in front of its first word."""
    return LEADING_COMMENTS.sub("", sql)


def strip_statement_settings(sql: str) -> str:
    """``sql`` without leading comments and without MariaDB's ``SET STATEMENT ... FOR`` prefix."""
    text = strip_leading_comments(sql)
    match = SET_STATEMENT.match(text)
    return text[match.end():] if match else text


def is_session_control(sql: str) -> bool:
    """A savepoint or a lock-wait setting: transaction plumbing, not a change."""
    return bool(SESSION_CONTROL.match(strip_leading_comments(sql)))


def is_transaction_control(sql: str) -> bool:
    """Session control, or a transaction boundary: not a statement of a migration's own."""
    return bool(TRANSACTION_CONTROL.match(strip_leading_comments(sql)))


# Statements that change rows (and roll back with a transaction on every engine, MySQL's InnoDB included).
DATA_CHANGE = re.compile(r"^(?:INSERT|UPDATE|DELETE|REPLACE|MERGE|WITH)\b", re.IGNORECASE)


def is_data_change(sql: str) -> bool:
    """``INSERT``, ``UPDATE``, ``DELETE``, ``REPLACE``, ``MERGE`` or ``WITH ...``, after leading comments."""
    return DATA_CHANGE.match(strip_leading_comments(sql)) is not None


def is_transaction_boundary(sql: str) -> bool:
    """``BEGIN``, ``COMMIT``, ``END``, ``ROLLBACK`` (not ``TO``), ``SET autocommit``: opens or ends one."""
    return bool(TRANSACTION_BOUNDARY.match(strip_leading_comments(sql)))


# -- statement splitting: a tokenizer with one scanner per opening character ---------------


class UnterminatedSQLError(ValueError):
    """A quote, block comment or dollar-quoted body is not closed before the end of the script."""


class Token(NamedTuple):
    """One piece of a script: ``kind`` is CODE, BLANK, COMMENT or END (the semicolon)."""

    text: str
    kind: str


CODE, BLANK, COMMENT, END = "code", "blank", "comment", "end"

_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")
_PLAIN_RUN = re.compile(r"[^-/'\"`$;]+")  # characters that never open a token
_END_TOKEN = Token(";", END)


def _line_comment(script: str, i: int) -> Token | None:
    """``-- ...`` up to, not including, the end of the line."""
    if not script.startswith("--", i):
        return None
    end = script.find("\n", i)
    return Token(script[i:] if end == -1 else script[i:end], COMMENT)


def _block_comment(script: str, i: int) -> Token | None:
    """``/* ... */`` (not nested)."""
    if not script.startswith("/*", i):
        return None
    end = script.find("*/", i + 2)
    if end == -1:
        raise UnterminatedSQLError(f"unterminated /* comment starting at offset {i}")
    return Token(script[i : end + 2], COMMENT)


def _quote_end(script: str, i: int) -> int:
    """Offset of the quote closing the one at ``i``: a doubled quote, or ``\\'`` (MySQL), does not close."""
    quote, end = script[i], i + 1
    while True:
        end = script.find(quote, end)
        if end == -1:
            raise UnterminatedSQLError(f"unterminated {quote} quote starting at offset {i}")
        if script[end + 1 : end + 2] == quote:
            end += 2
        elif quote == "'" and script[end - 1] == "\\" and script[end - 2 : end] != "\\\\":
            end += 1
        else:
            return end


def _quoted(script: str, i: int) -> Token:
    """A string literal or a quoted identifier (``'...'``, ``"..."``, `` `...` ``)."""
    return Token(script[i : _quote_end(script, i) + 1], CODE)


def _dollar_quoted(script: str, i: int) -> Token | None:
    """A PostgreSQL ``$tag$ ... $tag$`` body; a ``$`` inside an identifier (``a$1$b``) opens nothing."""
    match = _DOLLAR_TAG.match(script, i)
    if match is None or (i > 0 and (script[i - 1].isalnum() or script[i - 1] == "_")):
        return None
    tag = match.group(0)
    end = script.find(tag, match.end())
    if end == -1:
        raise UnterminatedSQLError(f"unterminated dollar-quoted body {tag} starting at offset {i}")
    return Token(script[i : end + len(tag)], CODE)


def _plain(script: str, i: int) -> Token:
    """A run of ordinary characters (or one opening character that opened nothing)."""
    match = _PLAIN_RUN.match(script, i)
    text = match.group(0) if match else script[i]
    return Token(text, BLANK if text.isspace() else CODE)


_SCANNERS: dict[str, Callable[[str, int], Token | None]] = {
    "-": _line_comment,
    "/": _block_comment,
    "'": _quoted,
    '"': _quoted,
    "`": _quoted,
    "$": _dollar_quoted,
    ";": lambda script, i: _END_TOKEN,
}


def tokenize(script: str) -> Iterator[Token]:
    """The tokens of ``script``, whose texts join back into it; UnterminatedSQLError on an open quote."""
    i, n = 0, len(script)
    while i < n:
        scanner = _SCANNERS.get(script[i])
        token = (scanner(script, i) if scanner else None) or _plain(script, i)
        yield token
        i += len(token.text)


def split_statements(script: str) -> list[str]:
    """The statements of ``script``, stripped, without the ending semicolon; comment-only parts dropped.

    UnterminatedSQLError on an open quote, block comment or dollar-quoted body.
    """
    statements: list[str] = []
    current: list[str] = []
    meaningful = False  # has the current statement anything but comments and blanks?
    for token in tokenize(script):
        if token.kind == END:
            if meaningful:
                statements.append("".join(current).strip())
            current, meaningful = [], False
        else:
            current.append(token.text)
            meaningful = meaningful or token.kind == CODE
    if meaningful:
        statements.append("".join(current).strip())
    return statements
