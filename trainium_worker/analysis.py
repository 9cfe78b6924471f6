"""What a program is, read from its source without running it."""

from __future__ import annotations

import ast
import threading

#: CPython 3.11 keeps the AST constructor's recursion depth in interpreter-wide state, so two
#: threads parsing at once can fail with a spurious "SystemError: AST constructor recursion
#: depth mismatch" (python/cpython#106905). Flow tasks run in threads: parse one at a time.
_PARSE_LOCK = threading.Lock()


def parse_code(code: str) -> ast.Module:
    """ast.parse, serialised, and asked once more after the spurious SystemError."""
    with _PARSE_LOCK:
        try:
            return ast.parse(code)
        except SystemError:
            return ast.parse(code)


def lines_of_code(code: str) -> int:
    return sum(1 for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _calls(node: ast.AST) -> set[str]:
    return {n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def training_loops(tree: ast.AST) -> list[ast.For | ast.While]:
    """Every for/while loop whose body calls `.backward()` and an optimizer's `.step()`."""
    return [node for node in ast.walk(tree) if isinstance(node, (ast.For, ast.While)) and {"backward", "step"} <= _calls(node)]


def has_training_loop(code: str) -> bool:
    try:
        tree = parse_code(code)
    except (SyntaxError, RecursionError, MemoryError, ValueError, SystemError):  # nested too deeply: no loop
        return False
    return bool(training_loops(tree))
