"""The house rules of docs/design.md, read from the code's own imports.

- nothing outside ``lbcore/sim/`` imports ``lbcore.sim``;
- no module imports another module's ``_private`` name (a shared helper is a ``_name.py`` of its own,
  whose names are public to its package);
- ``lbcore/testing/`` holds what users need, not the project's kernel harness;
- the import graph has no cycle, counting every import but those under ``if TYPE_CHECKING:``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"lbcore": ROOT / "lbcore", "lbcore_ipvs": ROOT / "backends" / "lbcore_ipvs",
            "lbcore_iptables": ROOT / "backends" / "lbcore_iptables"}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package, top in PACKAGES.items():
        for path in sorted(top.rglob("*.py")):
            parts = [package, *path.relative_to(top).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[tuple[str, list[str], int]]:
    """(module, names, line) of every absolute import outside ``if TYPE_CHECKING:`` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        yield from _imports(node)


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for module, names, _ in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in MODULES] or [module]
            graph[name].update(t for t in targets if t in MODULES and t != name)
    return graph


def test_nothing_outside_the_simulator_imports_it() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for name, path in MODULES.items()
        if not name.startswith(("lbcore.sim", "lbcore.testing"))
        for module, _, line in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if module == "lbcore.sim" or module.startswith("lbcore.sim.")
    ]
    assert offenders == []


def test_no_module_imports_another_modules_private_name() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}.{n}"
        for name, path in MODULES.items()
        for module, names, line in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if module.split(".")[0] in PACKAGES
        for n in names
        if n.startswith("_") and not n.startswith("__") and module != _package(name, path)
    ]
    assert offenders == []


def test_the_testing_package_holds_no_kernel_harness() -> None:
    harness = {"lbcore.testing.uml", "lbcore.testing.kernel_plugin", "lbcore.testing.kernel_replay",
               "lbcore.testing.netns", "lbcore.testing._peers"}
    assert sorted(harness & MODULES.keys()) == []
    for name in (n for n in MODULES if n.startswith("lbcore.testing")):
        imported = {m for m, _, _ in _imports(ast.parse(MODULES[name].read_text(encoding="utf-8")))}
        assert not {"subprocess", "ctypes"} & imported, name


def test_the_import_graph_has_no_cycle() -> None:
    graph = _edges()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == []


@pytest.mark.parametrize("module", ["lbcore.formats", "lbcore._fields"])
def test_the_layout_of_the_design_exists(module: str) -> None:
    assert module in MODULES
