"""The package's import structure, read from the source with `ast` (nothing is imported): arrows point down, so
the modules of quantkit import each other without a circle, and only `quantkit.runtime` opens libllama.

Every import counts, at module level or inside a function, absolute or relative; `from . import x` counts as an
import of the submodule x when there is one. Imports under `if TYPE_CHECKING:` never run, so they do not make
a circle — but they may not name llama_cpp either."""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "quantkit"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE
RUNTIME = f"{PACKAGE}.runtime"  # the one module (or package) allowed to import llama_cpp
LIBLLAMA = "llama_cpp"


@dataclass(frozen=True)
class Import:
    module: str  # the module imported (absolute, dotted)
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`: never executed


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name (its __init__.py)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, type_checking: bool = False):
    """(import node, whether it sits under `if TYPE_CHECKING:`) for every import in `node`, at any depth."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, type_checking
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk_stmt(stmt, True)
            for stmt in child.orelse:
                yield from _walk_stmt(stmt, type_checking)
        else:
            yield from _walk(child, type_checking)


def _walk_stmt(stmt: ast.stmt, type_checking: bool):
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        yield stmt, type_checking
    else:
        yield from _walk(stmt, type_checking)


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """What module `name` (stored at `path`) imports, resolved to absolute names."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node, type_checking in _walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, type_checking) for alias in node.names]
            continue
        if node.level:
            base = package.split(".")
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            found.append(Import(sub if sub in modules else target, node.lineno, type_checking))
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, list[Import]]]:
    """Edges between the package's own modules (executed imports only), and every import of every module."""
    modules = module_files(root)
    every = {name: imports_of(name, path, modules) for name, path in modules.items()}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, found in every.items():
        for imp in found:
            if imp.type_checking:
                continue
            target = _own_module(imp.module, modules)
            if target is not None and target != name:
                graph[name].add(target)
    return graph, every


def _own_module(module: str, modules: dict[str, Path]) -> str | None:
    """The package module that `module` names, or the closest package above it that is one (`quantkit.x.y`
    where y is a function's name); None outside the package."""
    while module:
        if module in modules:
            return module
        module = module.rpartition(".")[0]
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle per strongly connected component of more than one module (Tarjan), as a path a → … → a."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_circle_in(c, graph) for c in components]


def _circle_in(component: list[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest circle through the first module of a strongly connected component (breadth-first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    raise AssertionError(f"no circle through {start} in {component}")


def _in_runtime(name: str) -> bool:
    return name == RUNTIME or name.startswith(RUNTIME + ".")


# ---- the checks on this package -----------------------------------------------------------------------------

def test_the_package_has_no_import_circles():
    graph, every = import_graph()
    modules = module_files()
    found = cycles(graph)
    lines = []
    for circle in found:
        steps = []
        for a, b in zip(circle, circle[1:]):
            line = min(i.line for i in every[a] if not i.type_checking and _own_module(i.module, modules) == b)
            steps.append(f"{a} (line {line}) → {b}")
        lines.append("  " + ";  ".join(steps))
    assert not found, f"{len(found)} import circle(s) in {PACKAGE}:\n" + "\n".join(lines)


def test_only_the_runtime_imports_llama_cpp():
    _, every = import_graph()
    offenders = [f"  {name} line {imp.line}: imports {imp.module}" + (" (under TYPE_CHECKING)" if imp.type_checking else "")
                 for name, found in sorted(every.items()) if not _in_runtime(name)
                 for imp in found if imp.module == LIBLLAMA or imp.module.startswith(LIBLLAMA + ".")]
    assert not offenders, (f"{len(offenders)} import(s) of {LIBLLAMA} outside {RUNTIME}; go through "
                           f"{RUNTIME} instead:\n" + "\n".join(offenders))


# The layers of the package, lowest first: a part may import its own layer's parts and any lower layer's, never
# a higher one (the README's layout section draws the same picture).
LAYERS = [
    ["errors"],
    ["models", "quant_types", "files", "resources", "hub"],
    ["gguf"],
    ["memory"],
    ["runtime"],
    ["measure", "engine"],
    ["imatrix"],
    ["quantize"],
    ["convert"],
    ["chat", "eval", "serve"],
    ["share"],
    ["job"],
    ["cli"],
    ["__main__"],
]
# within a layer, the parts that may import each other (one way)
SIDEWAYS = {("chat", "engine"), ("eval", "engine"), ("serve", "engine")}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    level = {part: i for i, layer in enumerate(LAYERS) for part in layer}
    bad = []
    for a, targets in sorted(graph.items()):
        for b in sorted(targets):
            pa, pb = _part(a), _part(b)
            if pa == pb or pb == "" or pa == "":
                continue
            if pa not in level or pb not in level:
                bad.append(f"  {a} → {b}: {pa if pa not in level else pb} is in no layer of LAYERS")
            elif level[pb] > level[pa] or (level[pb] == level[pa] and (pa, pb) not in SIDEWAYS):
                bad.append(f"  {a} → {b}: {pa} may not import {pb}")
    return bad


def test_imports_point_down_the_layers():
    graph, _ = import_graph()
    bad = layer_violations(graph)
    assert not bad, f"{len(bad)} import(s) against the layers:\n" + "\n".join(bad)


def test_benchmarks_do_not_import_tests():
    root = ROOT.parent / "benchmarks"
    found = [f"  {path.name} line {node.lineno}" for path in sorted(root.glob("*.py"))
             for node, _ in _walk(ast.parse(path.read_text(encoding="utf-8")))
             if (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name or "").startswith("tests")]
    assert not found, "benchmarks/ imports tests/ (use reference/ for what both need):\n" + "\n".join(found)


# ---- the checker itself, on a made-up package ---------------------------------------------------------------

def _graph_of(tmp_path: Path, files: dict[str, str]) -> tuple[dict[str, set[str]], dict[str, list[Import]]]:
    for rel, text in files.items():
        path = tmp_path / PACKAGE / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return import_graph(tmp_path / PACKAGE)


def test_the_checker_sees_every_kind_of_import(tmp_path):
    graph, every = _graph_of(tmp_path, {
        "__init__.py": "from .a import f\n",
        "a.py": "def f():\n    from .sub import b\n",
        "sub/__init__.py": "",
        "sub/b.py": "import quantkit.c\n",
        "c.py": "from . import sub\nfrom quantkit.sub.b import thing\n",
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n    import llama_cpp\n"
                "def g():\n    import llama_cpp.llama_cpp as lib\n",
    })
    assert graph["quantkit"] == {"quantkit.a"}
    assert graph["quantkit.a"] == {"quantkit.sub.b"}  # function-level, `from . import x` to the submodule
    assert graph["quantkit.sub.b"] == {"quantkit.c"}
    assert graph["quantkit.c"] == {"quantkit.sub", "quantkit.sub.b"}
    assert graph["quantkit.d"] == set()  # TYPE_CHECKING imports do not run
    assert [(i.module, i.type_checking) for i in every["quantkit.d"] if i.module.startswith("llama_cpp")] == [
        ("llama_cpp", True), ("llama_cpp.llama_cpp", False)]
    assert cycles(graph) == [["quantkit.c", "quantkit.sub.b", "quantkit.c"]]


def test_the_checker_finds_a_circle_through_function_level_imports(tmp_path):
    graph, _ = _graph_of(tmp_path, {"__init__.py": "", "x.py": "import quantkit.y\n",
                                    "y.py": "def f():\n    from .z import g\n", "z.py": "def g():\n    from . import x\n"})
    assert cycles(graph) == [["quantkit.x", "quantkit.y", "quantkit.z", "quantkit.x"]]


def test_the_layer_check_finds_an_upward_import(tmp_path):
    graph, _ = _graph_of(tmp_path, {"__init__.py": "", "gguf/__init__.py": "from ..engine import x\n",
                                    "engine/__init__.py": "from ..gguf import y\n", "chat.py": "from .engine import z\n"})
    assert layer_violations(graph) == ["  quantkit.gguf → quantkit.engine: gguf may not import engine"]
