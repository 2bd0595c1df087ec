"""Testing helpers for backend authors: :mod:`lbcore.testing.conformance` (the conformance suite)
and :mod:`lbcore.testing.traces` (seeded random traces). Nothing here boots a kernel: lbcore's own
CI harness lives in its ``tests/_harness/``.
"""
