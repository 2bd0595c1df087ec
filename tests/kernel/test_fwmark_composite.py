"""A firewall-mark service in real IPVS, fed by MARK rules in real netfilter: one change, both ways.

All in throw-away namespaces inside the user-mode Linux kernel: the director's IPVS and iptables
are those of its own namespace, so nothing outside the test is touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from _harness.netns import Lab

from lbcore import Balancer, RealServer, VirtualService, open_backend
from lbcore.ops import AddRealServer, AddRule, AddService, DeleteRule, DeleteService
from lbcore.rules import FirewallMark
from lbcore.table import Table

pytestmark = pytest.mark.kernel

VIP, RIP = "10.80.0.100", "10.81.0.2"


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab("client", "dir", "rs") as lab:
        lab.link("client", "10.80.0.2/24", "dir", "10.80.0.1/24")
        lab.link("dir", "10.81.0.1/24", "rs", f"{RIP}/24")
        lab.run("dir", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        lab.run("client", "ip", "route", "add", "default", "via", "10.80.0.1")
        lab.run("rs", "ip", "route", "add", "default", "via", "10.81.0.1")
        lab.sysctl("dir", "net.ipv4.ip_forward", "1")
        lab.server("rs", "rs:80", 80)
        lab.server("rs", "rs:443", 443)
        yield lab


def test_a_fwmark_service_and_its_marks_apply_and_go_as_one_change(lab: Lab) -> None:
    service = VirtualService(fwmark=1, scheduler="rr", real_servers=[RealServer(RIP, 0, forward="nat")])
    marks = FirewallMark(1, "tcp", ports=(80, 443), destinations=[VIP])
    with lab.inside("dir"):
        lb = Balancer(open_backend("ipvs+iptables", ipvs={"fwmarks": [1]},
                                   iptables={"legacy_beside_nft": True}))
    try:
        assert lab.ask("client", VIP, 80, timeout=0.5) is None  # nothing listens on the director
        with lab.inside("dir"):
            ops = lb.apply(Table([service], rules=[marks]))
            assert ops == [AddService(service.settings), AddRealServer(service.key, service.real_servers[0]),
                           AddRule(marks)]
        assert lab.ask("client", VIP, 80) == "rs:80"
        assert lab.ask("client", VIP, 443) == "rs:443"
        assert "FWM  1 rr" in lab.run("dir", "ipvsadm", "-Ln")
        assert "-A LBCORE-M-00000001 -d 10.80.0.100/32 -p tcp -m multiport --dports 80,443 " \
            "-j MARK --set-xmark 0x1/0xffffffff" in lab.save("dir", "mangle")
        with lab.inside("dir"):
            assert lb.read().rules == {marks.key: marks} and list(lb.read()) == [service]
            assert lb.apply(Table([], rules=[])) == [DeleteRule(marks), DeleteService(service.key)]
        assert lab.ask("client", VIP, 80, timeout=0.5) is None
        assert "FWM" not in lab.run("dir", "ipvsadm", "-Ln")
    finally:
        with lab.inside("dir"):
            lb.close()
