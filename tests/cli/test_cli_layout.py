"""The command's place in the house (docs/design.md): a shell over the public API and lbcore.formats.

- lbcore/cli imports no private name from outside itself, never the simulator, never a backend's
  package (backends are opened by name, through the registry);
- nothing imports lbcore.cli but ``python -m lbcore`` (lbcore/__main__.py);
- importing it loads none of the heavy or optional packages: rich, the YAML loader, pyroute2,
  python-iptables are imported by the commands that need them, when they run.
"""

from __future__ import annotations

import ast
import subprocess
import sys

from conftest import ROOT, lbcore_env

CLI = ROOT / "lbcore" / "cli"


def imports(path: ast.AST) -> list[tuple[str, list[str]]]:
    found = []
    for node in ast.walk(path):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names)
    return found


def test_the_command_uses_only_public_names_and_no_backend_package() -> None:
    offenders = []
    for path in sorted(CLI.glob("*.py")):
        for module, names in imports(ast.parse(path.read_text())):
            if module.startswith(("lbcore.sim", "lbcore_")):
                offenders.append(f"{path.name}: {module}")
            if module.startswith("lbcore") and not module.startswith("lbcore.cli"):
                private = [n for n in [*module.split("."), *names] if n.startswith("_") and not n.startswith("__")]
                offenders += [f"{path.name}: {module} {n}" for n in private]
    assert offenders == []


def test_nothing_imports_the_command_but_python_m_lbcore() -> None:
    importers = sorted(
        str(path.relative_to(ROOT))
        for top in (ROOT / "lbcore", ROOT / "backends")
        for path in top.rglob("*.py")
        if CLI not in path.parents
        and any(module == "lbcore.cli" or module.startswith("lbcore.cli.")
                for module, _ in imports(ast.parse(path.read_text())))
    )
    assert importers == ["lbcore/__main__.py"]


def test_importing_the_command_loads_no_optional_package() -> None:
    heavy = ("rich", "ruamel.yaml", "cattrs", "pyroute2", "iptc", "lbcore.sim", "lbcore_ipvs", "lbcore_iptables",
             "lbcore.formats.yaml")
    done = subprocess.run([sys.executable, "-c", "import sys, lbcore.cli; "
                           f"print(' '.join(m for m in {heavy!r} if m in sys.modules))"],
                          capture_output=True, text=True, env=lbcore_env(), check=True)
    assert done.stdout.split() == []
