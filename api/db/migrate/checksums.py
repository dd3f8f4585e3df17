"""Checksums of migration definitions: what ``validate`` and ``status`` compare to detect drift.

A checksum is a SHA-256 of the function's syntax tree, found in its source file
(the file is parsed once and indexed by line), plus simple closure values and
defaults; without source, of the bytecode. Reformatting and comments do not
change it; a different argument does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import linecache
from typing import Any


class _ModuleIndex:
    """Function and lambda definitions of one source file, by first line (built once per file)."""

    def __init__(self, tree: ast.Module) -> None:
        self.lambdas: dict[int, list[ast.Lambda]] = {}
        self.functions: dict[tuple[str, int], list[ast.AST]] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Lambda):
                self.lambdas.setdefault(node.lineno, []).append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = {node.lineno} | {d.lineno for d in node.decorator_list}
                first = min(lines)
                for line in {node.lineno, first}:
                    self.functions.setdefault((node.name, line), []).append(node)


_index_cache: dict[tuple[str, int], _ModuleIndex | None] = {}


def _module_index(filename: str) -> _ModuleIndex | None:
    lines = linecache.getlines(filename)
    if not lines:
        return None
    source = "".join(lines)
    key = (filename, hash(source))
    if key not in _index_cache:
        try:
            _index_cache[key] = _ModuleIndex(ast.parse(source))
        except SyntaxError:
            _index_cache[key] = None
    return _index_cache[key]


def _definition_nodes(fn: Any) -> list[ast.AST]:
    """The AST node(s) that define ``fn`` in its source file (empty when the source is not available)."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    index = _module_index(code.co_filename)
    if index is None:
        return []
    if code.co_name == "<lambda>":
        return _lambda_nodes(code, index.lambdas.get(code.co_firstlineno, []))
    return list(index.functions.get((code.co_name, code.co_firstlineno), []))


def _lambda_nodes(code: Any, lambdas: list[ast.Lambda]) -> list[ast.AST]:
    """The lambda of ``code`` among those on its line; all of them when they cannot be told apart."""
    if len(lambdas) > 1 and hasattr(code, "co_positions"):
        # Python 3.11+: the first real instruction points at the lambda's body.
        positions = [p for p in code.co_positions() if p[0] is not None and p[2] is not None]
        for lineno, _end, col, _end_col in positions[1:2]:
            exact = [n for n in lambdas if (n.body.lineno, n.body.col_offset) == (lineno, col)]
            if exact:
                return list(exact)
    return list(lambdas)


def _simple(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) or (
        isinstance(value, tuple) and all(_simple(v) for v in value)
    )


def definition_checksum(fn: Any) -> str:
    """A SHA-256 of what a migration function says (see :func:`_definition_checksum`); cached per function."""
    try:
        return _cached_checksum(fn)
    except TypeError:  # an unhashable callable
        return _definition_checksum(fn)


@functools.lru_cache(maxsize=8192)
def _cached_checksum(fn: Any) -> str:
    return _definition_checksum(fn)


def _definition_checksum(fn: Any) -> str:
    """A SHA-256 of what a migration function says, stable across runs and Python versions.

    Built from the function's syntax tree (so reformatting or comments do not count
    as a change), plus simple closure values and defaults. Without source, from the
    bytecode. Stored in ``migration_history.checksum`` and compared by ``validate``.
    The parts and their order are part of every stored checksum: do not reorder them.
    """
    parts: list[str] = []
    target = fn
    if hasattr(fn, "func") and hasattr(fn, "args"):  # functools.partial
        parts.append(repr([a if _simple(a) else type(a).__name__ for a in fn.args]))
        target = fn.func
    nodes = _definition_nodes(target)
    parts.extend(_tree_parts(nodes) if nodes else _code_parts(target))
    parts.extend(_value_parts(target))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=False)


def _tree_parts(nodes: list[ast.AST]) -> list[str]:
    """Each definition's arguments and body, as syntax trees without positions."""
    parts: list[str] = []
    for node in nodes:
        body = node.body  # type: ignore[attr-defined]
        parts.append(_dump(node.args))  # type: ignore[attr-defined]
        statements = body if isinstance(body, list) else [body]  # a lambda's body is one expression
        parts.extend(_dump(stmt) for stmt in statements)
    return parts


def _code_parts(target: Any) -> list[str]:
    """Without source: the bytecode, its simple constants and names; else the callable's type."""
    code = getattr(target, "__code__", None)
    if code is None:
        return [f"{type(target).__module__}.{type(target).__qualname__}"]
    return [code.co_code.hex(), repr([c for c in code.co_consts if _simple(c)]), repr(code.co_names)]


def _described(value: Any) -> str:
    return repr(value) if _simple(value) else type(value).__name__


def _value_parts(target: Any) -> list[str]:
    """Closure values, then defaults: simple ones by value, others by type name."""
    parts: list[str] = []
    for cell in getattr(target, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        parts.append(_described(value))
    parts.extend(_described(default) for default in getattr(target, "__defaults__", None) or ())
    return parts
