"""The ``lbcore-cli`` directive: the command reference, read from the ``lbcore`` command itself.

It walks the click group of :mod:`lbcore.cli` at build time and prints each command's ``--help``,
so the reference cannot disagree with the command: a new option, command or help text shows up
in the next build, and there is no checked-in copy to keep true.
"""

from __future__ import annotations

from typing import Any

from cli_help import commands, help_text  # docs/_ext is on Sphinx's path, not a package
from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


class CLIReference(SphinxDirective):
    """``.. lbcore-cli::``: a section per subcommand, holding its ``--help``."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = [nodes.literal_block(text=help_text(), language="text")]
        for name, _ in commands():
            section = nodes.section(ids=[f"lbcore-{name}"], names=[f"lbcore {name}"])
            title = nodes.title()
            title += nodes.literal(text=f"lbcore {name}")
            section += title
            section += nodes.literal_block(text=help_text(name), language="text")
            self.state.document.note_implicit_target(section, section)
            out.append(section)
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("lbcore-cli", CLIReference)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
