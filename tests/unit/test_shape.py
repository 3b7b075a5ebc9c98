"""No module of the worker is longer than 700 lines, no class than 400, no function than 80.

Counted from the ``def`` or ``class`` line to the last line of its body, docstring and
comments included. The simulators (test and demo equipment) are not held to it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "worker"
EXEMPT = PACKAGE / "simulators"

MODULE_LINES = 700
CLASS_LINES = 400
FUNCTION_LINES = 80


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if not p.is_relative_to(EXEMPT))


def name_of(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def too_long(path: Path) -> list[str]:
    """What in ``path`` is over its limit, one line each."""
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if lines > MODULE_LINES:
        found.append(f"{name_of(path)}: {lines} lines (at most {MODULE_LINES})")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ClassDef):
            limit, kind = CLASS_LINES, "class"
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            limit, kind = FUNCTION_LINES, "function"
        else:
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > limit:
            found.append(f"{name_of(path)}:{node.lineno} {kind} {node.name}: {length} lines")
    return found


def test_the_package_has_modules_to_measure() -> None:
    assert len(modules()) > 40
    assert not any(path.is_relative_to(EXEMPT) for path in modules())


def test_no_module_class_or_function_is_over_its_limit() -> None:
    over = [line for path in modules() for line in too_long(path)]

    assert over == [], "over the limits, to be split:\n" + "\n".join(over)
