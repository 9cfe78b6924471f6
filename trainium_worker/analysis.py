"""What a program is, read from its source without running it."""

from __future__ import annotations

import ast


def lines_of_code(code: str) -> int:
    return sum(1 for line in code.splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _calls(node: ast.AST) -> set[str]:
    return {n.func.attr for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)}


def has_training_loop(code: str) -> bool:
    """A for/while loop whose body calls `.backward()` and an optimizer's `.step()`."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, RecursionError, MemoryError, ValueError):  # a program nested too deeply is no loop
        return False
    return any(
        {"backward", "step"} <= _calls(node) for node in ast.walk(tree) if isinstance(node, (ast.For, ast.While))
    )
