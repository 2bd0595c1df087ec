"""The ``lbcore-capabilities`` directive: the capability matrix of the backends installed now.

Each backend declares what it can express as data, in its class's ``capabilities``; this table is
read from there at build time, so it cannot disagree with the code. Columns are the backends that
:func:`lbcore.registry.backend_names` finds (entry-point group ``lbcore.backends``, plus ``sim``,
which is always there); rows are the members of :class:`lbcore.Capability`, in their order.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from lbcore.backend import Capability
from lbcore.registry import GROUP, backend_names


def backend_classes() -> dict[str, Any]:
    """Backend name -> its class (or the reason it cannot be imported here), without opening one."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    classes: dict[str, Any] = {}
    for name in backend_names():
        if name in found:
            try:
                classes[name] = found[name].load()
            except ImportError as exc:  # a backend whose extra is not installed
                classes[name] = f"cannot be imported here ({exc})"
        else:  # "sim" in a source tree that was never installed: registry.open_backend does the same
            from lbcore.sim import SimBackend

            classes[name] = SimBackend
    return classes


def _row(cells: list[str], literal_first: bool) -> nodes.row:
    row = nodes.row()
    for i, text in enumerate(cells):
        entry = nodes.entry()
        paragraph = nodes.paragraph()
        paragraph += nodes.literal(text=text) if literal_first and i == 0 else nodes.Text(text)
        entry += paragraph
        row += entry
    return row


class CapabilityMatrix(SphinxDirective):
    """``.. lbcore-capabilities::``: one row per capability, one column per installed backend."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        classes = backend_classes()
        usable = {name: cls for name, cls in classes.items() if not isinstance(cls, str)}
        table = nodes.table(classes=["lbcore-capabilities"])
        group = nodes.tgroup(cols=1 + len(usable))
        table += group
        group += nodes.colspec(colwidth=3)
        for _ in usable:
            group += nodes.colspec(colwidth=1)
        head = nodes.thead()
        head += _row(["capability", *usable], literal_first=False)
        group += head
        body = nodes.tbody()
        for capability in Capability:
            marks = ["yes" if capability in cls.capabilities else "no" for cls in usable.values()]
            body += _row([capability.value, *marks], literal_first=True)
        group += body
        out: list[nodes.Node] = [table]
        for name, reason in classes.items():
            if isinstance(reason, str):
                out.append(nodes.paragraph(text=f"Backend {name!r} is registered but {reason}."))
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("lbcore-capabilities", CapabilityMatrix)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
