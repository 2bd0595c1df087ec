"""The ```python blocks of the README and the docs: found, sorted by what they drive, and run.

A block that drives the simulator runs here (tests/test_docs_code.py); one that drives netfilter
runs in a throw-away network namespace (tests/netns/test_docs_code_iptables.py); one that drives
IPVS runs in user-mode Linux (tests/kernel/test_docs_code_ipvs.py). Every block is type-checked
with mypy --strict. Doctest blocks (```{doctest}) are run by the docs build, not here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "docs/how-to").glob("*.md")))
_FENCE = re.compile(r"^```python\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: The worktree's own code first, whatever lbcore the interpreter has installed. Where the host's
#: iptables is the nf_tables variant, the iptables backend is told to write legacy rules anyway
#: (the documented override): the blocks run in namespaces of their own.
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'backends'}", "LBCORE_IPTABLES_LEGACY": "1"}


@dataclass(frozen=True)
class Block:
    """One ```python block: where it is and its code."""

    page: Path
    line: int
    code: str

    @property
    def id(self) -> str:
        """``docs/how-to/dr.md:60``."""
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def needs(self) -> str:
        """Where it can run: "kernel" (it opens IPVS), "netns" (netfilter only) or "sim"."""
        code = re.sub(r"#.*", "", self.code)  # what a comment names is not opened
        if re.search(r"IPVSBackend\(|Balancer\(\"ipvs", code):
            return "kernel"
        if re.search(r"Balancer\(\"iptables", code):
            return "netns"
        return "sim"

    def write(self, directory: Path) -> Path:
        """The block as a module of its own in ``directory``, named after its page and line."""
        name = re.sub(r"\W", "_", self.id.replace(".md", ""))
        path = directory / f"block_{name}.py"
        path.write_text(self.code)
        return path


def blocks(needs: str | None = None) -> list[Block]:
    """Every block of the README and docs, in page order, or those with these ``needs``."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            found.append(Block(page, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return [b for b in found if needs is None or b.needs == needs]


def run(argv: Sequence[str], cwd: Path) -> str:
    """Run a block's program with the worktree's lbcore; its output, or AssertionError with stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=ENV, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def python(path: Path) -> list[str]:
    """The command line that runs ``path`` with this interpreter."""
    return [sys.executable, str(path)]
