"""What the iptables backend owns is proven by its marks, not by names; and what a kill leaves is read.

Each test is named after a finding of issue 11 (or the case beside it). The operator's objects are
made with iptables-legacy and ip, as another program would, and must be left byte-identical.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator

import pytest
from _harness.netns import Lab
from lbcore_iptables import IPTablesBackend
from lbcore_iptables import _layout as layout

from lbcore import Balancer, NotOwned, Persistence, RealServer, VirtualService
from lbcore.rules import AutoNat, LoopbackVIP, PolicyRoute, Redirect
from lbcore.table import Table

pytestmark = pytest.mark.netns

SERVICE = VirtualService("tcp", "192.0.2.10", 80, scheduler="rr",
                         real_servers=[RealServer("198.51.100.1", 80, forward="nat")])


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab("dir", tools=("iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore", "strace")) as lab:
        lab.batch("dir", ["link add lbown0 type veth peer name lbown1", "addr add 10.93.0.1/24 dev lbown0",
                          "link set lbown0 up", "link set lbown1 up"])
        yield lab


@pytest.fixture
def backend(lab: Lab) -> Iterator[IPTablesBackend]:
    with lab.inside("dir"):
        opened = IPTablesBackend(legacy_beside_nft=True)
        try:
            yield opened
        finally:
            opened.close()


def _iptables(lab: Lab, *argv: str) -> None:
    lab.run("dir", "iptables-legacy", *argv)


def _kernel(lab: Lab) -> dict[str, list[str]]:
    """iptables-legacy-save of nat and mangle, ip rule, routes of every table and lo's addresses."""
    held = {t: lab.save("dir", t) for t in ("nat", "mangle")}
    held["ip"] = [*lab.run("dir", "ip", "rule").splitlines(), *lab.run("dir", "ip", "route", "show", "table", "all")
                  .splitlines(), *lab.run("dir", "ip", "-o", "addr", "show", "dev", "lo").splitlines()]
    return held


def _chain(lab: Lab, table: str, chain: str) -> list[str]:
    return [line for line in lab.save("dir", table) if re.match(rf"(-A |:){re.escape(chain)} ", line)]


# -- chains: a name is not a mark ------------------------------------------------------------------


def test_foreign_lbcore_chain_with_plain_rule_is_not_owned(lab: Lab, backend: IPTablesBackend) -> None:
    _iptables(lab, "-t", "nat", "-N", "LBCORE-S-0123456789")
    _iptables(lab, "-t", "nat", "-A", "LBCORE-S-0123456789", "-j", "ACCEPT")
    before = _chain(lab, "nat", "LBCORE-S-0123456789")
    lb = Balancer(backend)
    assert backend.read() == Table([], rules={})  # was: ValueError: not enough values to unpack
    assert lb.apply(Table([], rules=[])) == []
    lb.apply([SERVICE])
    assert backend.read().services == {SERVICE.key: SERVICE}
    lb.apply([])
    assert _chain(lab, "nat", "LBCORE-S-0123456789") == before


def test_a_foreign_chain_with_the_name_of_a_wanted_service_is_not_owned(lab: Lab, backend: IPTablesBackend) -> None:
    name = layout.service_chain(SERVICE.key)
    _iptables(lab, "-t", "nat", "-N", name)
    _iptables(lab, "-t", "nat", "-A", name, "-j", "ACCEPT")
    before = _kernel(lab)
    with pytest.raises(NotOwned, match=f"the nat chain {name} .* not lbcore's"):
        Balancer(backend).apply([SERVICE])
    assert _kernel(lab) == before


def test_foreign_chain_with_descriptor_comment_is_not_read(lab: Lab, backend: IPTablesBackend) -> None:
    _iptables(lab, "-t", "nat", "-N", "LBCORE-S-0123456789")
    _iptables(lab, "-t", "nat", "-A", "LBCORE-S-0123456789", "-m", "comment", "--comment", "-A -t 192.0.2.7:80 -s rr")
    # Even a first rule that fakes the owner mark does not make it a service lbcore keeps there:
    # its descriptor names another chain.
    _iptables(lab, "-t", "nat", "-N", "LBCORE-S-FFFFFFFFFF")
    _iptables(lab, "-t", "nat", "-A", "LBCORE-S-FFFFFFFFFF", "-m", "comment", "--comment", layout.OWNER_MARK)
    _iptables(lab, "-t", "nat", "-A", "LBCORE-S-FFFFFFFFFF", "-m", "comment", "--comment", "-A -t 192.0.2.8:80 -s rr")
    before = _kernel(lab)
    assert backend.read() == Table([], rules={})
    assert Balancer(backend).apply(Table([], rules=[])) == []  # was: ServiceNotFound, forever
    assert _kernel(lab) == before


def test_foreign_lbcore_services_chain_is_not_owned(lab: Lab, backend: IPTablesBackend) -> None:
    _iptables(lab, "-t", "nat", "-N", "LBCORE-SERVICES")
    _iptables(lab, "-t", "nat", "-A", "LBCORE-SERVICES", "-j", "ACCEPT")
    before = _kernel(lab)
    assert backend.read() == Table([], rules={})
    with pytest.raises(NotOwned, match="the nat chain LBCORE-SERVICES"):  # was: OSError "Incompatible with this kernel"
        Balancer(backend).apply([SERVICE])
    assert _kernel(lab) == before
    assert backend.read() == Table([], rules={})


def test_an_operators_rule_in_lbcores_dispatch_chain_is_kept_and_not_read(lab: Lab, backend: IPTablesBackend) -> None:
    lb = Balancer(backend)
    lb.apply(Table([], rules=[Redirect("192.0.2.20")]))
    _iptables(lab, "-t", "nat", "-A", "LBCORE-REDIRECT", "-m", "comment", "--comment", "not a rule", "-j", "RETURN")
    lb.apply(Table([], rules=[Redirect("192.0.2.20"), Redirect("192.0.2.21")]))
    assert set(backend.read().rules or {}) == {Redirect("192.0.2.20").key, Redirect("192.0.2.21").key}
    assert '-A LBCORE-REDIRECT -m comment --comment "not a rule" -j RETURN' in lab.save("dir", "nat")


# -- routes, rules and addresses: the protocol is the mark, and every prefix of an apply is read ---


def test_route_without_rule_is_read_and_converges(lab: Lab, backend: IPTablesBackend) -> None:
    # What a kill between the route and its rule left: a route stamped 219, no rule pointing to it.
    lab.run("dir", "ip", "route", "add", "local", "default", "dev", "lo", "table", "100", "proto", "219")
    lb = Balancer(backend)
    assert backend.read().rules == {}
    wanted = Table([], rules=[PolicyRoute(1, 100, via="10.93.0.2")])
    assert lb.apply(wanted)  # was: BackendError (17, 'File exists'), on every apply
    assert lb.apply(wanted) == []
    assert backend.read() == wanted
    assert lab.run("dir", "ip", "route", "show", "table", "100").split() == \
        ["default", "via", "10.93.0.2", "dev", "lbown0", "proto", "219"]


def test_a_route_left_by_a_cut_short_add_is_swept_by_the_next_apply(lab: Lab, backend: IPTablesBackend) -> None:
    lab.run("dir", "ip", "route", "add", "10.94.0.0/24", "via", "10.93.0.2", "table", "100")  # the operator's
    lab.run("dir", "ip", "route", "add", "local", "default", "dev", "lo", "table", "100", "proto", "219")
    Balancer(backend).apply(Table([], rules=[PolicyRoute(2, 101)]))
    assert lab.run("dir", "ip", "route", "show", "table", "100").split() == \
        ["10.94.0.0/24", "via", "10.93.0.2", "dev", "lbown0"]


def test_rule_without_route_is_read_and_converges(lab: Lab, backend: IPTablesBackend) -> None:
    # What a kill between deleting the route and deleting its rule left.
    lab.run("dir", "ip", "rule", "add", "fwmark", "3", "table", "103", "pref", "1000", "protocol", "219")
    assert backend.read().rules == {PolicyRoute(3, 103).key: PolicyRoute(3, 103)}
    lb = Balancer(backend)
    assert lb.apply(Table([], rules=[]))
    assert "lookup 103" not in lab.run("dir", "ip", "rule")
    lab.run("dir", "ip", "rule", "add", "fwmark", "3", "table", "103", "pref", "1000", "protocol", "219")
    wanted = Table([], rules=[PolicyRoute(3, 103, via="10.93.0.2")])
    assert lb.apply(wanted) and lb.apply(wanted) == []


def test_two_rules_for_one_mark_read_as_the_one_in_effect_and_converge(lab: Lab, backend: IPTablesBackend) -> None:
    # A move of mark 4 from table 104 to 105 cut short after the new rule: the old one still wins.
    lb = Balancer(backend)
    lb.apply(Table([], rules=[PolicyRoute(4, 104)]))
    lab.run("dir", "ip", "route", "add", "local", "default", "dev", "lo", "table", "105", "proto", "219")
    lab.run("dir", "ip", "rule", "add", "fwmark", "4", "table", "105", "pref", "1000", "protocol", "219")
    assert backend.read().rules == {("policy-route", 4): PolicyRoute(4, 104)}
    wanted = Table([], rules=[PolicyRoute(4, 105)])
    assert lb.apply(wanted) and lb.apply(wanted) == []
    assert "lookup 104" not in lab.run("dir", "ip", "rule")
    assert lab.run("dir", "ip", "route", "show", "table", "104") == ""


def test_a_foreign_default_route_in_the_table_is_not_owned(lab: Lab, backend: IPTablesBackend) -> None:
    lab.run("dir", "ip", "route", "add", "default", "via", "10.93.0.2", "table", "100")
    before = _kernel(lab)
    with pytest.raises(NotOwned, match="table 100 has a default route that is not lbcore's"):
        Balancer(backend).apply(Table([], rules=[PolicyRoute(1, 100)]))
    assert _kernel(lab) == before


def test_a_foreign_address_on_lo_is_not_owned(lab: Lab, backend: IPTablesBackend) -> None:
    lab.run("dir", "ip", "addr", "add", "192.0.2.30/32", "dev", "lo")
    assert backend.read().rules == {}
    before = _kernel(lab)
    with pytest.raises(NotOwned, match=r"192\.0\.2\.30/32 on lo is not lbcore's"):
        Balancer(backend).apply(Table([], rules=[LoopbackVIP("192.0.2.30")]))
    assert _kernel(lab) == before
    Balancer(backend).apply(Table([], rules=[]))
    assert "192.0.2.30/32" in lab.run("dir", "ip", "addr", "show", "dev", "lo")


# -- values that read back as they were applied -----------------------------------------------------


def test_persistence_with_a_host_netmask_reapplies_as_a_no_op(backend: IPTablesBackend) -> None:
    svc = VirtualService("tcp", "192.0.2.10", 443, scheduler="rr",
                         persistence=Persistence(60, netmask="255.255.255.255"),
                         real_servers=[RealServer("198.51.100.1", 443, forward="nat")])
    lb = Balancer(backend)
    lb.apply([svc])
    assert lb.apply([svc]) == []  # was: an edit on every apply
    assert backend.read().services[svc.key] == svc


@pytest.mark.parametrize("interface", ["eth0", "lbown0", "bond0.100", "br-lan_2", "abcdefghijklmno"])
def test_auto_nat_reapplies_as_a_no_op(backend: IPTablesBackend, interface: str) -> None:
    wanted = Table([], rules=[AutoNat(interface, ["10.91.0.0/16"])])
    lb = Balancer(backend)
    lb.apply(wanted)
    assert lb.apply(wanted) == []
    assert backend.read() == wanted


# -- the commit's counter window, measured on iptables-legacy-restore -------------------------------


def test_iptables_legacy_restore_has_the_same_counter_window(lab: Lab) -> None:
    """iptables-legacy-restore commits through libiptc as lbcore does: IPT_SO_SET_REPLACE swaps the
    table in (the kernel hands the old counters back), then IPT_SO_SET_ADD_COUNTERS adds them to the
    new one. Killed between the two, the new table is in effect and every rule's counters are zero."""
    _iptables(lab, "-t", "nat", "-A", "POSTROUTING", "-o", "lo", "-j", "ACCEPT", "-c", "7", "700")
    add = "*nat\n-A PREROUTING -p tcp -m tcp --dport 9 -j ACCEPT\nCOMMIT\n"
    restore = ["ip", "netns", "exec", lab.ns("dir"), "strace", "-o", "/dev/null", "-e", "trace=setsockopt"]

    def killed_at(n: int) -> tuple[int, str]:
        done = subprocess.run([*restore, "-e", f"inject=setsockopt:signal=KILL:when={n}", "iptables-legacy-restore",
                               "--noflush"], input=add, text=True, capture_output=True, check=False)
        return done.returncode, lab.run("dir", "iptables-legacy-save", "-c", "-t", "nat")

    code, saved = killed_at(1)  # on entry of IPT_SO_SET_REPLACE: nothing changed
    assert code in (-9, 137) and "--dport 9" not in saved and "[7:700] -A POSTROUTING -o lo -j ACCEPT" in saved
    code, saved = killed_at(2)  # on entry of IPT_SO_SET_ADD_COUNTERS: the new table, counters lost
    assert code in (-9, 137) and "--dport 9" in saved and "[0:0] -A POSTROUTING -o lo -j ACCEPT" in saved


def test_tables_swapped_between_two_marks_end_as_asked(lab: Lab, backend: IPTablesBackend) -> None:
    # What the backend gets when one apply swaps the tables of two marks: both changes at once
    # (the plan's steps are checked one by one before; here only what rtnetlink must end with).
    from lbcore_iptables import _routes

    lb = Balancer(backend)
    lb.apply(Table([], rules=[PolicyRoute(1, 100), PolicyRoute(2, 101, via="10.93.0.2")]))
    swapped = [PolicyRoute(1, 101), PolicyRoute(2, 100, via="10.93.0.2")]
    _routes.apply(backend._ipr(), {r.key: r for r in swapped})
    assert backend.read() == Table([], rules=swapped)
    assert lab.run("dir", "ip", "route", "show", "table", "100").split() == \
        ["default", "via", "10.93.0.2", "dev", "lbown0", "proto", "219"]
    assert lab.run("dir", "ip", "route", "show", "table", "101").split() == \
        ["local", "default", "dev", "lo", "proto", "219", "scope", "host"]


def test_a_rule_stamped_219_that_lbcore_cannot_have_made_is_not_read(lab: Lab, backend: IPTablesBackend) -> None:
    lab.run("dir", "ip", "rule", "add", "fwmark", "9", "table", "main", "pref", "500", "protocol", "219")
    lab.run("dir", "ip", "rule", "add", "fwmark", "8", "table", "254", "pref", "1000", "protocol", "219")
    before = _kernel(lab)
    assert backend.read().rules == {}  # an untyped or InvalidField error here would block every apply
    Balancer(backend).apply(Table([], rules=[PolicyRoute(1, 100)]))
    Balancer(backend).apply(Table([], rules=[]))
    assert _kernel(lab) == before
