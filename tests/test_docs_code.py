"""The README's and the docs' ```python blocks run as written and pass mypy --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests._docs_code import ENV, ROOT, Block, blocks, python, run

SIM = blocks("sim")


def test_every_block_is_run_somewhere_and_the_readme_has_one() -> None:
    everything = blocks()
    assert {b.needs for b in everything} <= {"sim", "netns", "kernel"}
    assert any(b.page.name == "README.md" for b in SIM)
    # The netns and kernel tests run the rest; make sure each kind is there to run.
    assert blocks("netns") and blocks("kernel") and len(everything) == len(SIM) + len(blocks("netns")) + len(
        blocks("kernel"))


@pytest.mark.parametrize("block", SIM, ids=[b.id for b in SIM])
def test_a_simulator_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    run(python(block.write(tmp_path)), tmp_path)


def test_the_readme_snippet_prints_the_real_server_and_both_listings(tmp_path: Path) -> None:
    readme = [b for b in SIM if b.page.name == "README.md"]
    out = run(python(readme[0].write(tmp_path)), tmp_path)
    assert out.splitlines()[0] in ("198.51.100.11:80", "198.51.100.12:80")
    assert "IP Virtual Server version" in out and "IPVS connection entries" in out


def test_every_block_passes_mypy_strict(tmp_path: Path) -> None:
    files = [str(b.write(tmp_path)) for b in blocks()]
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(tmp_path / ".mypy_cache"), *files],
        capture_output=True, text=True, cwd=ROOT, env=ENV, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
