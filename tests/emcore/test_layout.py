"""The package's shape: no import cycles, data flows one way, no UI in the library, modules a
reader can hold in their head."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("emcore", "models")

# Layers, lowest first: a module may import its own layer or lower ones, never a higher one
# (io → Dataset → registry → method → result → evaluate, STYLE.md "Where things live").
LAYERS = [
    ("emcore.errors", "emcore.progress", "emcore.args"),
    ("emcore.noise",),
    ("emcore.data",),
    ("emcore.spectral",),
    ("emcore.io", "emcore.sim"),
    ("models",),
    ("emcore.train",),
    # metrics that need only arrays: methods may use them (self-calibration)
    ("emcore.evaluate.reference", "emcore.evaluate.count_split", "emcore.evaluate.frame_pairs",
     "emcore.evaluate.residuals", "emcore.evaluate.frc"),
    ("emcore.methods",),
    ("emcore.evaluate", "emcore.learn"),
    ("emcore.jobs", "emcore.batch"),
    ("emcore.cli", "emcore.__main__", "emcore"),
]
MAX_LINES = 600
WHY_LONG = "Longer than 600 lines on purpose"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Project modules that ``name`` imports anywhere in its source (lazy imports included)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
                   for n in ast.walk(node)}  # annotations only: not imported at run time
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in MODULES else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _layer(name: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{name} has no layer in tests/emcore/test_layout.py"
    return rank


def test_no_import_cycles():
    """Tarjan's strongly connected components: every component must be a single module.

    A package's ``__init__`` importing its own modules is the one allowed kind of edge into
    a cycle-prone spot, so modules inside a package import their siblings directly, never
    the package.
    """
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in comps if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_data_flows_one_way():
    bad = [f"{a} imports {b}" for a, deps in GRAPH.items() for b in deps if _layer(b) > _layer(a)]
    assert not bad, "a lower layer imports a higher one: " + "; ".join(sorted(bad))


def test_library_never_imports_streamlit():
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "streamlit" or n.startswith("streamlit.") for n in names), name


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_length(name):
    text = MODULES[name].read_text()
    n = text.count("\n")
    assert n <= MAX_LINES or WHY_LONG in text[:4000], (
        f"{name} has {n} lines; split it by concern or say at its top why not ('{WHY_LONG}: …')")


def test_every_module_imports_in_dependency_order():
    """A fresh interpreter imports every module, leaves of the graph first: each import must
    succeed with only its own dependencies already loaded."""
    order, seen = [], set()

    def visit(v):
        if v in seen:
            return
        seen.add(v)
        for w in sorted(GRAPH[v]):
            visit(w)
        order.append(v)

    for v in sorted(GRAPH):
        visit(v)
    order = [m for m in order if m != "emcore.__main__"]
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    r = subprocess.run([sys.executable, "-c", code, *order], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
