"""open_backend(name): backends are found through the entry-point group "lbcore.backends"."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Any

from lbcore.backend import Backend
from lbcore.errors import BackendUnavailable, InvalidField

GROUP = "lbcore.backends"
#: The backends that are part of the core, as setup.py declares them: usable from a source tree
#: that was never installed (an installed distribution's entry points come first).
BUILT_IN = (EntryPoint(name="sim", value="lbcore.sim:SimBackend", group=GROUP),)


def _entry_points() -> list[EntryPoint]:
    installed = list(entry_points(group=GROUP))
    names = {ep.name for ep in installed}
    return installed + [ep for ep in BUILT_IN if ep.name not in names]


def backend_names() -> list[str]:
    """The names of the installed backends, sorted; "sim" is always there."""
    return sorted({ep.name for ep in _entry_points()})


def open_backend(name: str, **options: Any) -> Backend:
    """Create the backend called ``name`` with ``options``.

    ``"ipvs+iptables"`` opens a :class:`~lbcore.composite.Composite` of both; ``options`` then
    holds each one's options by name: ``open_backend("ipvs+iptables", ipvs={"vips": [...]})``.

    Raises:
        InvalidField: no backend has that name.
        BackendUnavailable: the backend's package or privileges are missing.
    """
    if "+" in name:
        from lbcore.composite import Composite

        parts = name.split("+")
        unknown = set(options) - set(parts)
        if unknown:
            raise InvalidField("open_backend", "options", sorted(unknown), f"name no backend of {name!r}")
        opened: list[Backend] = []
        try:
            for part in parts:
                opened.append(open_backend(part, **options.get(part, {})))
        except BaseException:
            for each in opened:
                each.close()
            raise
        return Composite(*opened)
    found = [ep for ep in _entry_points() if ep.name == name]
    if found:
        try:
            cls = found[0].load()
        except ImportError as exc:
            raise BackendUnavailable(name, f"cannot import it ({exc}); pip install 'lbcore[{name}]'") from exc
    else:
        raise InvalidField("open_backend", "name", name, f"is not a backend ({', '.join(backend_names())})")
    backend: Backend = cls(**options)
    return backend
