"""The library neither prints nor ends the process: only `quantkit.cli` writes to the terminal and chooses an exit
code. Read from the source with `ast`, like tests/test_imports.py."""
from __future__ import annotations

import ast

from tests.test_imports import module_files

FORBIDDEN = {"print", "exit", "quit", "os._exit", "sys.exit", "os.abort", "sys.stdout.write", "sys.stderr.write"}


def _name(node: ast.expr) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def offences(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) in FORBIDDEN:
            found.append((node.lineno, _name(node.func)))
        elif isinstance(node, ast.Raise) and node.exc is not None and _name(
                node.exc.func if isinstance(node.exc, ast.Call) else node.exc) == "SystemExit":
            found.append((node.lineno, "raise SystemExit"))
        elif (isinstance(node, ast.Call) and _name(node.func) == "os.write" and node.args
              and isinstance(node.args[0], ast.Constant) and node.args[0].value in (1, 2)):
            found.append((node.lineno, "os.write to the terminal"))
    return sorted(found)


def test_the_check_finds_what_it_looks_for():
    source = "import os, sys\nprint(1)\nos._exit(1)\nsys.exit(2)\nraise SystemExit(3)\nos.write(2, b'x')\n"
    assert [what for _, what in offences(ast.parse(source))] == ["print", "os._exit", "sys.exit", "raise SystemExit",
                                                                 "os.write to the terminal"]


def test_no_library_module_prints_or_exits():
    bad = [f"{name}:{line}: {what}" for name, path in module_files().items()
           if not name.startswith(("quantkit.cli", "quantkit.__main__"))
           for line, what in offences(ast.parse(path.read_text(), str(path)))]
    assert not bad, "\n".join(bad)
