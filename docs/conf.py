"""Sphinx configuration for lbcore's documentation.

Build it with warnings as errors, every cross-reference checked, and every doctest run::

    sphinx-build -W -n -b html docs docs/_build/html
    sphinx-build -W -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # lbcore from this checkout, installed or not
sys.path.insert(1, str(HERE.parent / "backends"))  # and lbcore_ipvs (setup.py's package_dir)

import lbcore  # noqa: E402

project = "lbcore"
author = "the lbcore developers"
copyright = "the lbcore developers"
release = lbcore.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "capabilities",  # docs/_ext/capabilities.py: the capability matrix of the installed backends
    "deployment_fields",  # docs/_ext/deployment_fields.py: the deployment file's fields, from the model
    "cli_reference",  # docs/_ext/cli_reference.py: the lbcore command's reference, from its --help
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# -- autodoc and napoleon ---------------------------------------------------------------------------

autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_include_init_with_doc = False

# -- cross-references -------------------------------------------------------------------------------

nitpicky = True
# There is no network here, so no intersphinx: the standard library's types in lbcore's signatures
# cannot link anywhere (builtins and typing names Sphinx resolves itself; attrs types appear in no
# public signature). lbcore's own public names must all resolve; the few exceptions follow.
nitpick_ignore_regex = [
    ("py:class", r"(ipaddress|collections|collections\.abc|enum|asyncio\.\w+)\.\w+"),
    ("py:class", r"(pathlib\.)?Path"),  # pathlib's, in the pytest plugin's signatures
    # Private helpers of lbcore.health.probers, named in signatures only.
    ("py:class", r"lbcore\.health\.probers\._\w+"),
    # The simulator's private data-plane module (lbcore/sim/_dataplane.py), named in the DNAT data
    # plane's signatures only.
    ("py:class", r"lbcore\.sim\._dataplane\.\w+"),
]
nitpick_ignore = [
    # Type variables in signatures (requires(), sorted_real_servers()): not documented objects.
    ("py:class", "lbcore.testing.conformance.F"),
    ("py:class", "lbcore.formats.ipvsadm._R"),
    ("py:class", "lbcore.balancer.B"),
    ("py:obj", "lbcore.balancer.B"),
    # The simulator's kernel-side objects, named in the signature of Connection; they are
    # internals (one module per kernel file) and are not documented.
    ("py:class", "lbcore.sim.director.Conn"),
    # "Raises: Nothing." is how lbcore's docstrings say that a function raises nothing.
    ("py:exc", "Nothing"),
    ("py:exc", "Nothing."),
]

# -- HTML -------------------------------------------------------------------------------------------

html_theme = "alabaster"
html_title = f"lbcore {release}"
