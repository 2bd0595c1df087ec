"""The documentation agrees with the code: the one "what is built" list names only what exists, and
user-facing text carries no tracker issue numbers."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
ROLE = re.compile(r"\{py:(?:class|func|meth|mod|data|attr)\}`~?([\w.]+)`")


def what_is_built() -> list[str]:
    """The bullets of docs/index.md's "What is built today", one string each."""
    text = (ROOT / "docs" / "index.md").read_text()
    section = text.split("## What is built today\n", 1)[1].split("\nNot built yet", 1)[0]
    return ["- " + item for item in section.split("\n- ")[1:]]


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then look the rest up as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(dotted)


def test_every_item_of_what_is_built_names_objects_that_exist() -> None:
    items = what_is_built()
    assert len(items) >= 10, items
    for item in items:
        names = ROLE.findall(item)
        assert names, f"names no object: {item}"
        for name in names:
            assert resolve(name) is not None, name


@pytest.mark.parametrize("doc", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").rglob("*.md")))
def test_no_other_page_keeps_a_list_of_what_is_built(doc: str) -> None:
    if doc == "docs/index.md":
        return
    assert "what is built today" not in (ROOT / doc).read_text().lower()


def user_facing() -> list[Path]:
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "examples").glob("*.py")]
    files += [*(ROOT / "lbcore").rglob("*.py"), *(ROOT / "backends").rglob("*.py")]  # error messages
    return sorted(files)


def test_user_facing_text_has_no_issue_numbers() -> None:
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
             for path in user_facing()
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if re.search(r"\bissues? #?[0-9]", line, re.IGNORECASE)]
    assert found == []


def test_every_example_the_docs_include_exists() -> None:
    included = [m for p in (ROOT / "docs").rglob("*.md")
                for m in re.findall(r"literalinclude\} ((?:\.\./)+examples/\S+)", p.read_text())]
    assert included
    assert all((ROOT / "examples" / Path(m).name).exists() for m in included), included


def test_ci_runs_the_readmes_test_command_and_the_first_command_runs_the_main_job() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    first, tests = [line for line in block.splitlines() if line and not line.startswith("#")]
    # The main job is the lbcore command on a shipped deployment file (tests/cli runs it).
    files = [word for word in first.split() if word.startswith("examples/")]
    assert ".venv/bin/lbcore apply examples/option-1a.yaml" in first and files
    assert all((ROOT / f).exists() for f in files), files
    assert tests in (ROOT / ".ci" / "run").read_text().splitlines()
