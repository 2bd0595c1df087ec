"""lbcore's own CI harness: a real kernel with IPVS (user-mode Linux) and throw-away namespaces.

Not part of the library: users get :mod:`lbcore.testing` (the conformance suite and the seeded
traces); this package is how lbcore's tests reach a real kernel. pytest puts ``tests/`` on
``sys.path`` (``pythonpath`` in ``pyproject.toml``), on the host and inside user-mode Linux alike,
so tests import it as ``_harness``.

- :mod:`_harness.uml`: boot Debian's user-mode Linux and run one command inside.
- :mod:`_harness.kernel_plugin`: run the ``kernel`` tests in user-mode Linux boots and report them
  as the host's own.
- :mod:`_harness.netns`: :class:`~_harness.netns.Lab`, throw-away network namespaces.
- :mod:`_harness.kernel_replay`: the kernel's side of a trace replay, on a ``Lab``.
- ``_peers.py``: the real servers and clients of a replay, run as programs in namespaces.
"""
