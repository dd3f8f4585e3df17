"""Migration records and the validation of the declared list, done before any database work.

:func:`plan_migrations` explains every problem of a list at once;
:func:`_quick_names` accepts the common, valid list with whole-list operations
(it runs at every boot); :func:`migrations_digest` is the one value the no-op
boot compares.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import CodeType, FunctionType
from typing import Any, NamedTuple, Union

from api.db.exceptions import MigrationDeclarationError
from api.db.migrate.checksums import definition_checksum
from api.db.migrate.sqlfile import SQLFileError, read_sql_file
from api.db.migrate.tracker import NAME_MAX_LENGTH

MigrationFn = Callable[..., Any]
MigrationLike = Union["Migration", tuple[str, MigrationFn], tuple[str, MigrationFn, MigrationFn]]

# Version 2: names serialized as a JSON array (version 1 joined them with newlines, ambiguous once a
# name held one). An existing database does not know the new digest: its next boot takes one locked
# pass, where the history (not the digest) decides that nothing is pending, and records the new digest.
DIGEST_VERSION = "api.db.migrate.runner/2"

# Control characters (C0, DEL, C1): never part of a name (a newline or NUL would reach logs and history).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class _MigrationFields(NamedTuple):
    """The fields of a :class:`Migration`, in their tuple order.

    A NamedTuple cannot define ``__new__``, so :class:`Migration` subclasses this one
    to keep its options keyword-only.
    """

    name: str
    fn: MigrationFn
    atomic: bool = True
    description: str = ""
    lock_timeout: float | None = None
    lock_retries: int | None = None
    down: MigrationFn | None = None  # the way back; None: derived from what ``fn`` did (recorded inverses)


class Migration(_MigrationFields):
    """One named schema change. ``fn(m)`` (or ``fn()``) performs it through the migrator ``m``.

    ``down(m)`` undoes it for :func:`~api.db.migrate.rollback.rollback_db`; without it the way back
    is derived from the inverse of each operation ``fn`` ran, recorded in the history.

    ``atomic=False`` runs it outside any transaction (``CREATE INDEX CONCURRENTLY``).
    ``lock_timeout`` (seconds) and ``lock_retries`` bound how long each of its DDL
    statements waits for a table lock, and how often it tries again (None: the
    defaults of :func:`api.db.schema.ddl.safe_schema_migrator`).
    Immutable (a named tuple, cheap to build at every boot, name first); validated with
    the whole list by :func:`plan_migrations`. Options after ``fn`` are keyword-only.
    """

    __slots__ = ()

    def __new__(
        cls,
        name: str,
        fn: MigrationFn,
        down: MigrationFn | None = None,
        *,
        atomic: bool = True,
        description: str = "",
        lock_timeout: float | None = None,
        lock_retries: int | None = None,
    ) -> Migration:
        return tuple.__new__(cls, (name, fn, atomic, description, lock_timeout, lock_retries, down))

    @classmethod
    def from_sql_file(
        cls,
        name: str,
        path: str | Path,
        *,
        atomic: bool = True,
        description: str = "",
        lock_timeout: float | None = None,
        lock_retries: int | None = None,
        down: MigrationFn | None = None,
    ) -> Migration:
        """A migration that runs the statements of an SQL file, read and split now.

        A missing or malformed file raises :class:`~api.db.migrate.sqlfile.SQLFileError` here,
        before anything runs. Each statement is one ``m.sql`` operation, so objects
        that already exist are counted as applied (adoption) and MySQL resumes after
        the last completed statement. The statements are part of the checksum.
        """
        statements = tuple(read_sql_file(path))
        if not statements:
            raise SQLFileError(f"SQL file {path} holds no statement")

        def run_sql_file(m: Any) -> None:
            for statement in statements:
                m.sql(statement)

        return cls(
            name,
            run_sql_file,
            atomic=atomic,
            description=description or f"SQL file {Path(path).name}",
            lock_timeout=lock_timeout,
            lock_retries=lock_retries,
            down=down,
        )

    def __repr__(self) -> str:
        return f"Migration({self.name!r}, atomic={self.atomic})"

    @property
    def checksum(self) -> str:
        """SHA-256 of the function's definition (see :func:`definition_checksum`)."""
        return definition_checksum(self.fn)


_CO_VARARGS = 0x04


def _arity(fn: MigrationFn) -> tuple[int, bool] | None:
    """(required arguments, accepts a positional argument) from the code object; None when unknown."""
    code = getattr(fn, "__code__", None)
    if code is None or not isinstance(code, CodeType):
        return None
    positional = code.co_argcount
    if inspect.ismethod(fn):
        positional -= 1
    defaults = len(getattr(fn, "__defaults__", None) or ())
    kwonly_defaults = len(getattr(fn, "__kwdefaults__", None) or {})
    required = max(0, positional - defaults) + max(0, code.co_kwonlyargcount - kwonly_defaults)
    return required, positional > 0 or bool(code.co_flags & _CO_VARARGS)


def _takes_migrator(fn: MigrationFn) -> bool:
    """False for zero-argument callables; True otherwise (also when the signature is unknowable)."""
    arity = _arity(fn)
    if arity is not None:
        return arity[1]
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def _too_many_arguments(fn: MigrationFn) -> bool:
    arity = _arity(fn)
    if arity is not None:
        return arity[0] > 1
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    return len(required) > 1


def _quick_arity_ok(fn: Any) -> bool:
    """The common case, a plain function taking at most one required argument, in a few attribute reads."""
    if type(fn) is not FunctionType:
        return False
    code = fn.__code__
    return code.co_kwonlyargcount == 0 and code.co_argcount - len(fn.__defaults__ or ()) <= 1


def _quick_names(items: list[Any]) -> list[str] | None:
    """The names of ``items`` when the whole list is plainly valid (the usual case at boot), else None.

    Whole-list operations in C (map, set, attrgetter) instead of a Python loop of
    checks: a fraction of a microsecond a migration. None sends the list through
    :func:`plan_migrations`, which explains every problem.
    """
    try:
        declared = _quick_pairs(items) if set(map(type, items)) == {tuple} else _quick_records(items)
        if declared is None:
            return None
        names, functions = declared
        if items and not (_quick_names_ok(names) and _quick_functions_ok(functions)):
            return None
    except (TypeError, ValueError, IndexError, AttributeError):
        return None
    return names


_last_declaration: tuple[tuple[Any, ...], list[str], str] | None = None  # (items, names, digest)


def quick_declaration(items: list[Any]) -> tuple[list[str], str] | None:
    """Names and digest of an obviously valid list (see :func:`_quick_names`), else None.

    The last answer is kept for the same items (the same objects, in order): an application
    declares its list once and every boot passes it again. Only tuples and Migration records
    (tuples too) are kept, which cannot change in between.
    """
    global _last_declaration
    last = _last_declaration
    if last is not None and len(last[0]) == len(items) and all(map(operator.is_, last[0], items)):
        return list(last[1]), last[2]
    names = _quick_names(items)
    if names is None:
        return None
    digest = migrations_digest(names)
    if set(map(type, items)) <= {tuple, Migration}:
        _last_declaration = (tuple(items), names, digest)
    return list(names), digest


def _quick_pairs(items: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """Names and functions of a list of plain ``(name, fn)`` tuples with distinct names."""
    declared = dict(items)  # ValueError unless every item is a pair; duplicates collapse
    if len(declared) != len(items):
        return None
    return list(declared), list(declared.values())


def _quick_records(items: list[Any]) -> tuple[list[Any], list[Any]] | None:
    """Names and functions of Migration records and pairs, with distinct names and boolean ``atomic``."""
    if not all(type(i) is Migration or (type(i) is tuple and len(i) == 2) for i in items):
        return None
    if not all(i[2] is True or i[2] is False for i in items if type(i) is Migration):
        return None
    names = list(map(_FIRST, items))
    if len(set(names)) != len(names):
        return None
    return names, list(map(_SECOND, items))


def _quick_names_ok(names: list[Any]) -> bool:
    """Non-empty, unpadded, short enough, no control character (raises TypeError on a non-string name)."""
    # str.strip raises TypeError on a non-string name; "" and padded names differ after it.
    if "" in names or list(map(str.strip, names)) != names:
        return False
    return max(map(len, names)) <= NAME_MAX_LENGTH and CONTROL_CHARACTERS.search("".join(names)) is None


def _quick_functions_ok(functions: list[Any]) -> bool:
    """Plain functions only, with at most one positional parameter and no keyword-only ones."""
    if set(map(type, functions)) != {FunctionType}:
        return False
    codes = list(map(_CODE, functions))
    return max(map(_ARGCOUNT, codes)) <= 1 and not any(map(_KWONLY, codes))


_FIRST = operator.itemgetter(0)
_SECOND = operator.itemgetter(1)
_CODE = operator.attrgetter("__code__")
_ARGCOUNT = operator.attrgetter("co_argcount")
_KWONLY = operator.attrgetter("co_kwonlyargcount")


def plan_migrations(migrations: Iterable[MigrationLike]) -> list[Migration]:
    """Validate the whole declaration and return it as :class:`Migration` records, in order.

    Every problem is reported at once in one :class:`MigrationDeclarationError`; nothing
    touches a database. Runs at every boot, so the common case costs well under a
    microsecond a migration.
    """
    if isinstance(migrations, (str, bytes, dict)) or not isinstance(migrations, Iterable):
        raise MigrationDeclarationError(
            "migrations must be a list of Migration(name, fn) or (name, fn[, down]) tuples, "
            f"not {type(migrations).__name__}"
        )
    problems: list[str] = []
    planned: list[Migration] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(migrations):
        migration = item if type(item) is Migration else _as_migration(item)
        if migration is None:
            problems.append(
                f"migration #{index}: expected Migration(name, fn) or a (name, fn) tuple, got {item!r:.80}"
            )
            continue
        if not _plainly_valid(migration, seen):
            problems.extend(_declaration_problems(index, migration, seen))
        name = migration[0]
        if isinstance(name, str) and name not in seen:
            seen[name] = index
        planned.append(migration)
    if problems:
        raise MigrationDeclarationError(
            f"{len(problems)} invalid migration declaration(s), nothing was run: " + "; ".join(problems)
        )
    return planned


def _as_migration(item: Any) -> Migration | None:
    """``item`` as a Migration record (a ``(name, fn)`` pair gets the defaults); None for anything else."""
    if isinstance(item, Migration):
        return item
    if isinstance(item, tuple) and len(item) in (2, 3):
        down = item[2] if len(item) == 3 else None
        return tuple.__new__(Migration, (item[0], item[1], True, "", None, None, down))
    return None


def _plainly_valid(migration: Migration, seen: dict[str, int]) -> bool:
    """The common case, cheaply: a fresh, clean name, a boolean ``atomic`` and a one-argument function."""
    name, fn, atomic = migration[0], migration[1], migration[2]
    return (
        type(name) is str
        and 0 < len(name) <= NAME_MAX_LENGTH
        and not name[0].isspace()
        and not name[-1].isspace()
        and name not in seen
        and name.isprintable()  # else the slow path looks for control characters
        and (atomic is True or atomic is False)
        and _quick_arity_ok(fn)
        and (migration[6] is None or _quick_arity_ok(migration[6]))
    )


def _declaration_problems(index: int, migration: Migration, seen: dict[str, int]) -> list[str]:
    """Everything wrong with one declaration (the slow, explanatory path of :func:`plan_migrations`)."""
    problems: list[str] = []
    name = migration.name
    if not isinstance(name, str) or not name.strip():
        return [f"migration #{index}: the name must be a non-empty string, got {name!r}"]
    where = f"migration #{index} {name!r:.60}"
    if name != name.strip():
        problems.append(f"{where}: the name has leading or trailing whitespace")
    control = CONTROL_CHARACTERS.search(name)
    if control is not None:
        problems.append(
            f"{where}: the name has the control character {control.group()!r} "
            f"at position {control.start()}; use printable characters only"
        )
    if len(name) > NAME_MAX_LENGTH:
        problems.append(
            f"{where}: the name has {len(name)} characters; the history column holds {NAME_MAX_LENGTH}"
        )
    if name in seen:
        problems.append(f"{where}: duplicate name, already used by migration #{seen[name]}")
    if not callable(migration.fn):
        problems.append(f"{where}: fn must be callable, got {type(migration.fn).__name__}")
    elif _too_many_arguments(migration.fn):
        problems.append(f"{where}: fn must take the migrator m as its only argument (or no argument)")
    if not isinstance(migration.atomic, bool):
        problems.append(f"{where}: atomic must be True or False, got {migration.atomic!r}")
    if migration.down is not None and not callable(migration.down):
        problems.append(f"{where}: down must be callable or None, got {type(migration.down).__name__}")
    return problems


def migrations_digest(planned: Sequence[Migration] | Sequence[str]) -> str:
    """One value for the declared list: its names, in order.

    Whether anything is pending depends on names only (a migration is pending until
    its name has a ``success`` or ``skipped`` row), so names are all the no-op check
    needs, and hashing them costs microseconds. A changed definition of an applied
    migration (drift) is never re-run; it is reported by the locked path, ``status``
    and ``validate``, which compare :func:`definition_checksum` values.
    """
    names = [m if isinstance(m, str) else m[0] for m in planned]
    return hashlib.sha256(digest_payload(names).encode()).hexdigest()


def digest_payload(names: list[str]) -> str:
    """The canonical, unambiguous text hashed by :func:`migrations_digest`: a JSON array, ASCII-escaped.

    JSON quotes and escapes each name, so two different lists never give the same text
    (``["ab", "c"]`` and ``["a", "bc"]``; a separator inside a name), whatever the names hold.
    """
    return json.dumps([DIGEST_VERSION, *names], ensure_ascii=True, separators=(",", ":"))
