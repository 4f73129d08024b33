"""No function of the package is longer than a reader can hold: at most :data:`MAX_LINES` lines of code.

Checked on the syntax tree of every Python file under ``pipeline/``, ``transforms/`` and
``networks/`` (recursively) and of ``errors.py``; nothing is imported.

Lines of code of a function or method: the non-blank lines that are not only a comment, from its
first statement after the docstring to its last line (the signature, decorators and docstring are
not counted). A nested function counts toward its parent and on its own.

A long function is split into named steps (see ``pipeline/train/engine.py``: ``train`` resolves the run,
splits the fold, writes the run record and hands over to ``_fit``). The only exception is a
function that is mostly a literal data table, listed in :data:`ALLOWED` with the reason.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("pipeline", "transforms", "networks")
PACKAGE_FILES = ("errors.py",)
MAX_LINES = 80

#: ``"path:qualified name"`` -> why it may be longer: only functions that are mostly a literal
#: data table (a table reads as well long as split). Empty: no function of the package is one.
ALLOWED: dict[str, str] = {}

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def package_files() -> list[Path]:
    """Every ``.py`` file of the package code, sorted."""
    files = [ROOT / name for name in PACKAGE_FILES if (ROOT / name).is_file()]
    for d in PACKAGE_DIRS:
        files += [p for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files)


def functions(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, FunctionNode]]:
    """``(qualified name, node)`` of every function and method in ``tree``, nested ones included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node
            yield from functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def code_lines(node: FunctionNode, lines: list[str]) -> int:
    """Lines of code of ``node`` (``lines``: its file's lines): non-blank, not only a comment, from
    the first statement after the docstring to the function's last line."""
    body = node.body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    first = min([body[0].lineno] + [d.lineno for d in getattr(body[0], "decorator_list", [])])
    text = lines[first - 1:node.end_lineno]
    return sum(1 for line in text if line.strip() and not line.strip().startswith("#"))


def long_functions(source: str, path: str) -> list[tuple[str, int, str, int]]:
    """``(path, line, qualified name, lines of code)`` of the functions of ``source`` over the limit."""
    lines = source.splitlines()
    out = []
    for name, node in functions(ast.parse(source, filename=path)):
        n = code_lines(node, lines)
        if n > MAX_LINES:
            out.append((path, node.lineno, name, n))
    return out


def test_no_function_over_the_limit() -> None:
    offenders = []
    for p in package_files():
        rel = p.relative_to(ROOT).as_posix()
        for path, line, name, n in long_functions(p.read_text(encoding="utf-8"), rel):
            if f"{path}:{name}" not in ALLOWED:
                offenders.append(f"{path}:{line} {name} ({n} lines)")
    assert not offenders, (f"{len(offenders)} function(s) over {MAX_LINES} lines of code; split each into "
                           "named steps:\n" + "\n".join(offenders))


def test_allowed_entries_are_still_long() -> None:
    """Every allow-list entry names a function that exists and still needs the exception."""
    long = set()
    for p in package_files():
        rel = p.relative_to(ROOT).as_posix()
        long |= {f"{path}:{name}" for path, _, name, _ in long_functions(p.read_text(encoding="utf-8"), rel)}
    assert not sorted(set(ALLOWED) - long)


def test_counting_rules() -> None:
    """Docstring, blank and comment-only lines are not counted; a nested function counts in its parent
    (its docstring too: all the parent's lines after its own docstring) and on its own."""
    body = "\n".join(f"    x{i} = {i}  # a trailing comment counts" for i in range(MAX_LINES - 4))
    src = (
        "@decorator\n"
        "def outer(a,\n"
        "          b):\n"
        '    """A docstring\n'
        "\n"
        '    of several lines."""\n'
        "    # a comment line\n"
        "\n"
        f"{body}\n"
        "    def inner():\n"
        '        """Its docstring."""\n'
        "        return 1\n"
        "    return inner\n"
        "\n"
        "class C:\n"
        "    def method(self):\n"
        '        """Only a docstring."""\n'
    )
    tree = ast.parse(src)
    counts = {name: code_lines(node, src.splitlines()) for name, node in functions(tree)}
    assert counts == {"outer": MAX_LINES, "outer.inner": 1, "C.method": 0}
    assert long_functions(src, "x.py") == []
    longer = src.replace("    return inner\n", "    y = 1\n    return inner\n")
    assert long_functions(longer, "x.py") == [("x.py", 2, "outer", MAX_LINES + 1)]
