"""The ``lbcore-deployment-fields`` directive: every object of the deployment file and its fields.

The tables are generated when the documentation is built, from
:func:`lbcore.formats.yaml.reference` (which reads the model's classes, their validators and the
``Args:`` of their docstrings), so the reference cannot disagree with what the loader takes.
"""

from __future__ import annotations

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from lbcore.formats.yaml import reference


def _row(cells: list[str], literal: tuple[int, ...]) -> nodes.row:
    row = nodes.row()
    for i, text in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += nodes.literal(text=text) if i in literal and text else nodes.Text(text)
        entry += paragraph
        row += entry
    return row


class DeploymentFields(SphinxDirective):
    """``.. lbcore-deployment-fields::``: one table per object, one row per field."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        out: list[nodes.Node] = []
        for obj in reference():
            title = nodes.paragraph()
            title += nodes.strong(text=obj.where if obj.where == "the document" else "")
            if obj.where != "the document":
                title += nodes.literal(text=obj.where)
            title += nodes.Text(f" ({obj.cls.__module__}.{obj.cls.__qualname__})")
            out.append(title)
            table = nodes.table(classes=["lbcore-deployment-fields"])
            group = nodes.tgroup(cols=4)
            table += group
            for width in (2, 3, 2, 5):
                group += nodes.colspec(colwidth=width)
            head = nodes.thead()
            head += _row(["field", "takes", "default", "meaning"], literal=())
            group += head
            body = nodes.tbody()
            for field in obj.fields:
                body += _row([field.name, field.type, field.default, field.description], literal=(0, 2))
            group += body
            out.append(table)
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("lbcore-deployment-fields", DeploymentFields)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
