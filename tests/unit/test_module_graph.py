"""The shape of the module graph: no import cycles, core never reaches a concrete provider,
services never call the CLI.

Imports are read from the source (module level and inside functions alike, ``TYPE_CHECKING``
blocks included), so an import hidden in a function to dodge a cycle still counts.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# import name -> folder in the checkout (pyproject maps the two distributions' packages onto these)
ROOTS = {"mlplat": REPO / "mlplat", "mlplat_providers": REPO / "providers", "mlplat_policies": REPO / "policies"}


@dataclass(frozen=True)
class Edge:
    target: str
    line: int


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for package, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = [package, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = path
    return mods


def _imported_names(module: str, path: Path, tree: ast.AST):
    """``(dotted name, line)`` for every import statement anywhere in the file, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([base] if base else []))
            yield base, node.lineno
            for alias in node.names:  # `from mlplat.services import registry` imports a module
                yield f"{base}.{alias.name}", node.lineno


def _resolve(name: str, mods: dict[str, Path]) -> str | None:
    while name:
        if name in mods:
            return name
        name = name.rpartition(".")[0]
    return None


def build_graph(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported project module: first line}. A module's own ancestors are left out:
    importing ``a.b`` runs ``a/__init__`` first whatever ``a.b`` imports, so that edge is no choice."""
    graph: dict[str, dict[str, int]] = {m: {} for m in mods}
    for module, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for name, line in _imported_names(module, path, tree):
            target = _resolve(name, mods)
            if target is None or target == module or module.startswith(target + "."):
                continue
            graph[module].setdefault(target, line)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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


def _describe(component: list[str], graph: dict[str, dict[str, int]], mods: dict[str, Path]) -> str:
    members = set(component)
    edges = [f"    {m} -> {t} ({mods[m].relative_to(REPO)}:{line})"
             for m in component for t, line in sorted(graph[m].items()) if t in members]
    return "cycle among " + ", ".join(component) + ":\n" + "\n".join(edges)


@pytest.fixture(scope="module")
def mods() -> dict[str, Path]:
    return _modules()


@pytest.fixture(scope="module")
def graph(mods) -> dict[str, dict[str, int]]:
    return build_graph(mods)


def test_the_checker_finds_cycles_through_function_level_and_relative_imports(tmp_path):
    """The check itself: a cycle closed by an import inside a function, one written relatively,
    and a chain without a cycle."""
    files = {
        "pkg/__init__.py": "",
        "pkg/a.py": "from pkg import b\n",
        "pkg/b.py": "def later():\n    from pkg.c import thing\n",
        "pkg/c.py": "from .a import x\n",
        "pkg/d.py": "import pkg.a\n",
        "pkg/sub/__init__.py": "from ..d import y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    mods = {}
    for path in (tmp_path / "pkg").rglob("*.py"):
        parts = ["pkg", *path.relative_to(tmp_path / "pkg").with_suffix("").parts]
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = build_graph(mods)
    assert graph["pkg.sub"] == {"pkg.d": 1}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_import_cycles(mods, graph):
    found = cycles(graph)
    assert not found, ("import cycles (function-level imports count too; move the shared piece into its own "
                       "module):\n" + "\n".join(_describe(c, graph, mods) for c in found))


def test_the_graph_covers_core_providers_and_policies(mods, graph):
    assert {"mlplat.services.registry", "mlplat_providers.local", "mlplat_policies.rules"} <= set(mods)
    assert "mlplat.services.registry" in graph["mlplat.services.gate"]


def test_core_never_imports_a_concrete_provider(mods, graph):
    """``mlplat/`` reaches providers only through the provider registry (entry points)."""
    offenders = [f"{mods[m].relative_to(REPO)}:{line} imports {t}"
                 for m, targets in graph.items() if m == "mlplat" or m.startswith("mlplat.")
                 for t, line in targets.items() if t.startswith("mlplat_providers")]
    for module, path in mods.items():  # importlib.import_module("mlplat_providers...") is an import too
        if not (module == "mlplat" or module.startswith("mlplat.")):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and node.value.startswith("mlplat_providers"):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} names {node.value!r}")
    assert not offenders, "core imports a concrete provider:\n" + "\n".join(offenders)


def test_services_never_call_the_cli(mods, graph):
    """Services are called by the CLI, never the reverse: no import of ``mlplat.cli`` and no
    child interpreter told to run it (``-c "from mlplat.cli import main; main()"``)."""
    offenders = [f"{mods[m].relative_to(REPO)}:{line} imports {t}"
                 for m, targets in graph.items() if m.startswith("mlplat.services")
                 for t, line in targets.items() if t == "mlplat.cli" or t.startswith("mlplat.cli.")]
    for module, path in mods.items():
        if not module.startswith("mlplat.services"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and "mlplat.cli" in node.value and "import" in node.value:
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno} runs the CLI: {node.value!r}")
    assert not offenders, "a service calls the CLI:\n" + "\n".join(offenders)
