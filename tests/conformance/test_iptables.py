"""The conformance suite on the iptables backend, in a throw-away namespace of the real kernel."""

from collections.abc import Iterator

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend

from lbcore.testing.conformance import BackendConformance


@pytest.mark.netns
class TestIPTables(BackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[IPTablesBackend]:
        with Lab("dir") as lab, lab.inside("dir"):
            opened = IPTablesBackend(legacy_beside_nft=True, weighted="random")
            try:
                yield opened
            finally:
                opened.close()
