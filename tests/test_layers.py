"""Dependencies point one way: no import cycle within ``hf_illusions``, imports inside functions included.

The import graph is read from the source with :mod:`ast`, every ``import`` statement wherever it
stands (a deferred import inside a function still makes its module depend on the one it names),
``if TYPE_CHECKING:`` blocks included: they never run, but a type-only import still couples two
modules, and grimp (what import-linter builds on) counts it too. The layering itself (which
module may import which) is the import-linter contracts in ``pyproject.toml``, checked by
``make lint`` and here (so CI's ``make test`` checks them too); the cycle test also fails on a
cycle between modules of one layer, which no layers contract can see.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "hf_illusions"


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name → (file, is a package ``__init__``)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _import_nodes(tree: ast.AST):
    """Every Import/ImportFrom node, at any depth (inside functions and ``TYPE_CHECKING`` blocks too)."""
    return (node for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom))


def import_graph() -> dict[str, dict[str, int]]:
    """module → {imported module of the package: line of the first such import}."""
    mods = modules()

    def owner(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in mods.items():
        edges = graph.setdefault(name, {})
        package = name if is_package else name.rpartition(".")[0]
        for node in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:  # relative: from . import x, from ..y import z
                    parts = package.split(".")
                    base = ".".join(
                        parts[: len(parts) - node.level + 1] + ([node.module] if node.module else [])
                    )
                else:
                    base = node.module or ""
                # `from pkg import mod` names the submodule; `from mod import name` the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    found = owner(target)
                    if found and found != name:
                        edges.setdefault(found, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph.get(child, {}))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_sees_imports_inside_functions():
    graph = import_graph()
    # a deferred import (inside a function) of the CLI's `train` command
    assert "hf_illusions.train" in graph["hf_illusions.cli.data"]
    # the registry imports the proxy classes inside model_classes()
    assert "hf_illusions.simplify.proxy" in graph["hf_illusions.registry"]


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        ({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}, [["a", "b", "c"]]),
        ({"a": {"b": 1}, "b": {}}, []),
    ],
)
def test_cycles_finds_strongly_connected_components(graph, expected):
    assert cycles(graph) == expected


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    detail = [
        " ↔ ".join(component)
        + "".join(
            f"\n    {a} imports {b} (line {graph[a][b]})"
            for a in component
            for b in graph[a]
            if b in component
        )
        for component in found
    ]
    assert not found, "import cycles in hf_illusions:\n" + "\n".join(detail)


def test_inner_modules_do_not_import_the_public_api():
    """``hf_illusions/__init__`` is the top of the graph: it may import anything, so nothing imports it."""
    offenders = {name: edges[PACKAGE] for name, edges in import_graph().items() if PACKAGE in edges}
    assert not offenders, f"import from the defining module instead of `hf_illusions`: {offenders}"


def test_import_linter_contracts_are_kept():
    """The contracts of ``pyproject.toml`` (``make lint`` runs the same command)."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    if not lint_imports.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
