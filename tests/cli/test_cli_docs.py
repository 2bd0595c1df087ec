"""The command reference (docs/cli.md) is the command's own help, generated when the docs are built."""

from __future__ import annotations

import sys

from conftest import ROOT, Run

sys.path.insert(0, str(ROOT / "docs" / "_ext"))
import cli_help  # docs/_ext is on Sphinx's path, not a package; no Sphinx needed


def test_the_cli_page_holds_the_generated_reference() -> None:
    page = (ROOT / "docs" / "cli.md").read_text()
    assert "```{lbcore-cli}\n```" in page
    assert "cli_reference" in (ROOT / "docs" / "conf.py").read_text()


def test_the_reference_is_what_each_command_prints_for_help(lbcore: Run) -> None:
    columns = "200"  # a terminal wider than the help's widest: the width is the command's own
    names = [name for name, _ in cli_help.commands()]
    assert names == ["apply", "check", "conns", "diff", "export", "import", "plan", "replay", "simulate", "status",
                     "validate"]
    assert lbcore("--help", COLUMNS=columns).stdout == cli_help.help_text() + "\n"
    for name in names:
        done = lbcore(name, "--help", COLUMNS=columns)
        assert done.stdout == cli_help.help_text(name) + "\n", name


def test_the_documented_exit_codes_are_the_commands() -> None:
    from lbcore.cli import _common

    page = (ROOT / "docs" / "cli.md").read_text()
    table = page.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for code in (_common.OK, _common.DIFFERENCE, _common.REFUSED, _common.INTERNAL):
        assert f"\n| {code} | " in table, code
