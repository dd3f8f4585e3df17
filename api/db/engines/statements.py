"""The vocabulary of statement analysis that the engines' tables speak (previews).

Kinds of work, PostgreSQL's lock modes (the generic statement table of
:mod:`api.db.preview.analysis` is written in them; the other engines translate), the
effect of one statement, and one row of an engine's ALTER TABLE table with its matcher.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

# -- kinds of work ------------------------------------------------------------------------

CREATE = "create"  # a new object: nobody uses it yet
METADATA = "metadata"  # catalog change only
INDEX = "index"  # reads the table and builds an index
SCAN = "scan"  # reads the whole table to check something (NOT NULL, a constraint)
REWRITE = "rewrite"  # writes a new copy of the table
DATA = "data"  # INSERT / UPDATE / DELETE rows
OTHER = "other"  # not recognised: assumed to take the strongest lock

BYTES_PER_ROW_GUESS = 100  # when the catalog gives rows but no bytes

# -- PostgreSQL lock modes -----------------------------------------------------------------

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE = "SHARE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
# Modes that conflict with ROW EXCLUSIVE, i.e. stop INSERT/UPDATE/DELETE while held.
PG_BLOCKS_WRITES = frozenset({SHARE, SHARE_ROW_EXCLUSIVE, "EXCLUSIVE", ACCESS_EXCLUSIVE})

# -- names in statement text ---------------------------------------------------------------

IDENT = r'(?:"(?:[^"]|"")+"|`[^`]+`|\[[^\]]+\]|[\w$]+)'
NAME = rf"({IDENT}(?:\s*\.\s*{IDENT})?)"  # one capture group: a (schema-qualified) name


def unquote(name: str) -> str:
    """The last part of a (schema-qualified, quoted) name, unquoted."""
    parts = re.findall(IDENT, name)
    last = parts[-1] if parts else name
    if last[:1] in ('"', "`", "["):
        last = last[1:-1].replace('""', '"')
    return last


@dataclass(frozen=True)
class StatementEffect:
    """What a statement does, before looking at the table's size."""

    kind: str
    lock: str  # PostgreSQL lock mode, MySQL algorithm, or SQLite's database write lock
    blocks_writes: bool  # INSERT/UPDATE/DELETE on the table wait while it runs
    rewrites_table: bool
    table: str | None = None
    breaking: str | None = None  # drop_column, drop_table, rename_column, rename_table
    new_name: str | None = None  # the target of a rename
    concurrent_index: bool = False
    operation: str = ""  # short name: create_index, add_column...


class AlterForm(NamedTuple):
    """One ALTER TABLE form of an engine's table: where it matches, and what it does then."""

    pattern: str  # matched at the start of the upper-cased text after ``ALTER TABLE <name>``
    kind: str
    lock: str
    blocks_writes: bool
    rewrites: bool
    operation: str
    breaking: str | None = None
    names: str = ""  # on the original text: groups (old, new) or (new,) of a rename
    instant: str = ""  # MySQL/MariaDB: INSTANT from the version its MYSQL_INSTANT_SINCE row names
    anywhere: bool = False  # search the whole text instead of matching at its start


class AlterMatch(NamedTuple):
    """The form an ALTER TABLE matched, with the names of what it renames (None when it renames nothing)."""

    form: AlterForm
    old: str | None
    new: str | None

    def effect(self, table: str) -> StatementEffect:
        """The form's effect on ``table``, as its table row says."""
        form = self.form
        operation = form.operation if self.old is None else f"{form.operation} {self.old}"
        return StatementEffect(form.kind, form.lock, form.blocks_writes, form.rewrites, table, form.breaking,
                               self.new, operation=operation)


def match_alter(forms: Sequence[AlterForm], rest: str) -> AlterMatch:
    """The first of ``forms`` that ``rest`` (the text after ``ALTER TABLE <name>``) matches."""
    text = rest.strip()
    up = text.upper()
    form = next(f for f in forms if (re.search if f.anywhere else re.match)(f.pattern, up))
    return AlterMatch(form, *_renamed(form.names, text))


def _renamed(pattern: str, text: str) -> tuple[str | None, str | None]:
    """(old, new) names of a rename: '?' where the text does not say, None where the form has no such name."""
    if not pattern:
        return None, None
    compiled = re.compile(pattern, re.IGNORECASE | re.DOTALL)
    match = compiled.match(text)
    groups = match.groups() if match else ("?",) * compiled.groups
    names = [g if match is None else unquote(g) for g in groups]
    return (names[0] if len(names) == 2 else None), names[-1]
