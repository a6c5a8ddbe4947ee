"""The shape of the code: core's modules import one another without a cycle, and plugins use
only the published plugin API (``runyard.PLUGIN_API``, listed in docs/plugins.md).

Imports are read from the source with ``ast``: those inside functions count (they run
too, only later); those under ``if TYPE_CHECKING:`` do not count for cycles (they never
run), but a plugin's are checked against the API like any other.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import runyard

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "core" / "src" / "runyard"
PLUGIN_SOURCES = sorted([*ROOT.glob("plugins/*/src"), *ROOT.glob("examples/plugins/*/src")])
PLUGIN_DOC = ROOT / "docs" / "plugins.md"

Import = tuple[str, int]  # (imported runyard module, line)


def _is_core_module(name: str) -> bool:
    """``runyard.NAME`` is a module (or package) of core."""
    return (CORE / f"{name}.py").exists() or (CORE / name / "__init__.py").exists()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, type_checking: bool) -> Iterator[ast.AST]:
    """Every node under ``node``; the bodies of ``if TYPE_CHECKING:`` only if asked for."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child) and not type_checking:
            yield from (n for stmt in child.orelse for n in (stmt, *_walk(stmt, type_checking)))
            continue
        yield child
        yield from _walk(child, type_checking)


def runyard_imports(
    path: Path, *, type_checking: bool, lazy_names: bool = False, package: str = ""
) -> list[Import]:
    """The runyard modules that the file at ``path`` imports, anywhere in it.

    ``from runyard import NAME`` imports the submodule ``runyard.NAME`` when there is one,
    else the package ``runyard`` — or, with ``lazy_names``, for a lazy name of the package
    (``run.Config``), the module that defines it (what the import runs).
    ``package``: the file's package, for relative imports.
    """
    out: list[Import] = []
    for node in _walk(ast.parse(path.read_text(), str(path)), type_checking):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            if module != "runyard":
                out.append((module, node.lineno))
                continue
            for alias in node.names:
                if _is_core_module(alias.name):
                    out.append((f"runyard.{alias.name}", node.lineno))
                elif lazy_names:
                    out.append((runyard._CORE.get(alias.name, "runyard"), node.lineno))
                else:
                    out.append(("runyard", node.lineno))
    return [(m, line) for m, line in out if m == "runyard" or m.startswith("runyard.")]


# ------------------------------------------------------------------------------ import cycles
def core_graph() -> dict[str, dict[str, int]]:
    """Core's import graph: module -> {module it imports: first line that does}."""
    graph: dict[str, dict[str, int]] = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = graph.setdefault(name, {})
        for module, line in runyard_imports(path, type_checking=False, lazy_names=True, package=package):
            if module != name:
                edges.setdefault(module, line)
    return graph


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The graph's strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in graph.get(node, {}):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def shortest_cycle(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for succ in sorted(graph[node]):
            if succ == start:
                return [*paths[node], start]
            if succ in members and succ not in paths:
                paths[succ] = [*paths[node], succ]
                queue.append(succ)
    raise AssertionError(f"no cycle through {start} in {component}")


def describe_cycle(graph: dict[str, dict[str, int]], cycle: list[str]) -> str:
    return ", ".join(f"{a} line {graph[a][b]} imports {b}" for a, b in itertools.pairwise(cycle))


def test_the_import_graph_of_core_is_read_from_every_module() -> None:
    graph = core_graph()
    assert {"runyard", "runyard.experiment", "runyard.plugins", "runyard.registries"} <= set(graph)
    assert "runyard.errors" in graph["runyard.registries"]
    # an import inside a function counts: the manager registers the built-in plugin lazily
    assert "runyard.builtin" in graph["runyard.plugins"]
    # one under `if TYPE_CHECKING:` does not: hookspecs names the registries for mypy only
    assert "runyard.registries" not in graph["runyard.hookspecs"]


def test_the_cycle_finder_finds_a_cycle_and_names_its_imports() -> None:
    graph = {"a": {"b": 3}, "b": {"c": 5}, "c": {"a": 7, "d": 1}, "d": {}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    assert describe_cycle(graph, ["a", "b", "c", "a"]) == (
        "a line 3 imports b, b line 5 imports c, c line 7 imports a"
    )


def test_core_modules_import_one_another_without_a_cycle() -> None:
    """Counting imports inside functions too (TYPE_CHECKING blocks aside): a cycle means two
    modules that cannot be understood, tested or changed apart."""
    graph = core_graph()
    cycles = [
        f"{{{', '.join(c)}}}: {describe_cycle(graph, shortest_cycle(graph, c))}"
        for c in strongly_connected(graph)
    ]
    assert not cycles, "import cycles among core modules:\n" + "\n".join(cycles)


# ------------------------------------------------------------------------------ the plugin API
def plugin_files() -> list[Path]:
    files = sorted(path for src in PLUGIN_SOURCES for path in src.rglob("*.py"))
    assert len(files) > 20, PLUGIN_SOURCES  # every plugin's sources, not an empty glob
    return files


def test_plugins_import_only_the_published_plugin_api() -> None:
    """Everything of core outside ``runyard.PLUGIN_API`` is internal: a plugin that imports
    it breaks when core changes. Imports for type checkers count too."""
    outside = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in plugin_files()
        for module, line in runyard_imports(path, type_checking=True)
        if module not in runyard.PLUGIN_API
    ]
    assert not outside, "plugins import core modules outside runyard.PLUGIN_API:\n" + "\n".join(outside)


def test_the_plugin_api_check_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "plugin.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import runyard.store\n"
        "from runyard import serialization, Config\n"
        "if TYPE_CHECKING:\n"
        "    from runyard.experiment import Experiment\n"
        "def later():\n"
        "    from runyard.scheduler import Driver\n"
    )
    assert runyard_imports(source, type_checking=True) == [
        ("runyard.store", 2),
        ("runyard.serialization", 3),
        ("runyard", 3),  # run.Config: a public name of the package
        ("runyard.experiment", 5),
        ("runyard.scheduler", 7),
    ]
    # what runs: no TYPE_CHECKING block, and run.Config's own module
    assert runyard_imports(source, type_checking=False, lazy_names=True) == [
        ("runyard.store", 2),
        ("runyard.serialization", 3),
        ("runyard.config", 3),
        ("runyard.scheduler", 7),
    ]


def documented_plugin_api() -> list[str]:
    text = PLUGIN_DOC.read_text()
    start = text.index("\n## The plugin API\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"^\| `(runyard(?:\.\w+)*)` \|", text[start:end], flags=re.M)


def test_the_plugin_guide_lists_exactly_the_published_plugin_api() -> None:
    assert documented_plugin_api() == list(runyard.PLUGIN_API)


def test_every_module_of_the_plugin_api_exists() -> None:
    missing = [m for m in runyard.PLUGIN_API if m != "runyard" and not _is_core_module(m.split(".", 1)[1])]
    assert not missing
    assert list(runyard.PLUGIN_API) == sorted(runyard.PLUGIN_API)  # kept in order, docs too
