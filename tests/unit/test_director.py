"""The simulated director's core (lbcore/sim/director.py against net/netfilter/ipvs/ip_vs_core.c,
ip_vs_conn.c, ip_vs_ctl.c and ip_vs_proto_tcp.c of Linux 6.1): connection lifecycle and counters,
the OVERLOAD flag, persistence templates, the dest trash, the expire_nodest_conn and
conn_reuse_mode sysctls, service lookup and one-packet scheduling.

Real servers A, B, C are 198.51.100.1-3; added in that order they form the kernel's list [C, B, A].
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lbcore import Balancer, Persistence, RealServer, Sysctls, Timeouts, VirtualService
from lbcore.sim import Connection, SimBackend, tcp
from lbcore.sim.director import Conn, Director
from lbcore.sim.state import Dest

VIP = "192.0.2.1"
CLIENT = "203.0.113.1"
A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"
NAMES = {A: "A", B: "B", C: "C"}
ip = ipaddress.ip_address


class Lab:
    """A SimBackend with one virtual service on VIP, and shortcuts into the kernel's state."""

    def __init__(self, *real_servers: RealServer, scheduler: str = "rr", protocol: str = "tcp", port: int = 80,
                 **service: Any) -> None:
        self.sim = SimBackend()
        self.lb = Balancer(self.sim)
        if "fwmark" in service:
            self.service = VirtualService(scheduler=scheduler, real_servers=real_servers, **service)
        else:
            self.service = VirtualService(protocol=protocol, address=VIP, port=port, scheduler=scheduler,
                                          real_servers=real_servers, **service)
        self.lb.add_service(self.service)

    @property
    def kernel(self) -> Director:
        return self.sim.director

    def dests(self) -> list[Dest]:
        return self.kernel.services[self.service.key].dests

    def dest(self, address: str) -> Dest:
        (found,) = [d for d in self.dests() if d.address == ip(address)]
        return found

    def counters(self, address: str) -> tuple[int, int, int]:
        d = self.dest(address)
        return d.activeconns, d.inactconns, d.persistconns

    def open(self, client: str = CLIENT, vport: int = 80, **options: Any) -> Connection:
        conn = self.sim.connect(client, VIP, vport, **options)
        assert conn is not None, "IPVS scheduled no real server"
        return conn

    def entry(self, conn: Connection) -> Conn:
        """The kernel's connection entry for ``conn`` (it must still exist)."""
        (found,) = [cp for cp in self.kernel.conns.values()
                    if cp.caddr == conn.client and cp.cport == conn.client_port and cp.vport == conn.vport]
        return found

    def entries(self) -> list[Conn]:
        return list(self.kernel.conns.values())

    def templates(self) -> list[Conn]:
        return list(self.kernel.templates.values())

    def packet(self, conn: Connection, flags: int) -> Conn | None:
        """One client packet on ``conn``'s 4-tuple; the entry it used, or None if IPVS dropped it."""
        proto = 6 if conn.protocol.value == "tcp" else 17
        return self.kernel.packet_in(proto, conn.client, conn.client_port, conn.vip, conn.vport, flags)

    def reply(self, conn: Connection, flags: int) -> None:
        """One real-server packet back through the director (NAT)."""
        assert self.kernel.packet_out(self.entry(conn), flags)

    def syn(self, client: str = CLIENT, port: int = 40000, vport: int = 80) -> Conn | None:
        return self.kernel.packet_in(6, ip(client), port, ip(VIP), vport, tcp.SYN)

    def sysctls(self, **values: Any) -> None:
        self.lb.set_sysctls(Sysctls(**values))

    def name(self, conn: Connection | Conn | None) -> str | None:
        if conn is None:
            return None
        address = conn.real_server if isinstance(conn, Connection) else conn.daddr
        return NAMES[str(address)]


def rs(address: str, weight: int = 1, **fields: Any) -> RealServer:
    return RealServer(address, fields.pop("port", 80), weight=weight, **fields)


def nat(address: str, weight: int = 1, **fields: Any) -> RealServer:
    return rs(address, weight, forward="nat", **fields)


# -- connection lifecycle: counters through the TCP state machine ---------------------------------------


def test_every_new_connection_is_bound_inactive_and_its_syn_makes_it_active() -> None:
    d = Lab(rs(A))
    cp = d.syn()
    assert cp is not None
    assert cp.state == tcp.SYN_RECV
    assert cp.timeout == 60
    assert d.counters(A) == (1, 0, 0)
    assert d.kernel.packet_in(6, ip(CLIENT), 40000, ip(VIP), 80, tcp.SYN) is cp  # a retransmission
    assert cp.state == tcp.SYN_RECV and d.counters(A) == (1, 0, 0)


def test_dr_connection_lifecycle() -> None:
    d = Lab(rs(A))
    conn = d.open()
    cp = d.entry(conn)
    assert (cp.state, cp.timeout) == (tcp.ESTABLISHED, 900)
    assert d.counters(A) == (1, 0, 0)
    d.sim.disconnect(conn)  # client FIN, then ACK; a DR director sees no replies (INPUT_ONLY)
    assert (cp.state, cp.timeout) == (tcp.FIN_WAIT, 120)
    assert d.counters(A) == (0, 1, 0)
    d.sim.advance(119.9)
    assert d.entries() == [cp]
    d.sim.advance(0.2)
    assert d.entries() == []
    assert d.counters(A) == (0, 0, 0)


def test_nat_connection_lifecycle_client_closes_first() -> None:
    d = Lab(nat(A))
    conn = d.open()  # SYN, server SYN+ACK, ACK
    cp = d.entry(conn)
    assert cp.state == tcp.ESTABLISHED and d.counters(A) == (1, 0, 0)
    assert d.packet(conn, tcp.FIN | tcp.ACK) is cp
    assert (cp.state, cp.timeout) == (tcp.CLOSE_WAIT, 60)
    assert d.counters(A) == (0, 1, 0)
    d.reply(conn, tcp.ACK)
    assert cp.state == tcp.CLOSE_WAIT
    d.reply(conn, tcp.FIN | tcp.ACK)
    assert (cp.state, cp.timeout) == (tcp.TIME_WAIT, 120)
    d.packet(conn, tcp.ACK)
    assert (cp.state, cp.timeout) == (tcp.TIME_WAIT, 120)
    assert d.counters(A) == (0, 1, 0)
    d.sim.advance(120.1)
    assert d.entries() == [] and d.counters(A) == (0, 0, 0)


def test_nat_connection_lifecycle_server_closes_first() -> None:
    d = Lab(nat(A))
    conn = d.open()
    cp = d.entry(conn)
    d.reply(conn, tcp.FIN | tcp.ACK)
    assert (cp.state, cp.timeout) == (tcp.FIN_WAIT, 120)
    assert d.counters(A) == (0, 1, 0)
    d.packet(conn, tcp.ACK)
    assert cp.state == tcp.FIN_WAIT
    d.packet(conn, tcp.FIN | tcp.ACK)
    assert cp.state == tcp.TIME_WAIT and d.counters(A) == (0, 1, 0)


def test_nat_handshake_states() -> None:
    d = Lab(nat(A))
    cp = d.syn()
    assert cp is not None and cp.state == tcp.SYN_RECV
    assert d.kernel.packet_out(cp, tcp.SYN | tcp.ACK)
    assert cp.state == tcp.SYN_RECV and d.counters(A) == (1, 0, 0)
    d.kernel.packet_in(6, ip(CLIENT), 40000, ip(VIP), 80, tcp.ACK)
    assert cp.state == tcp.ESTABLISHED


def test_rst_closes_a_connection_for_10_seconds() -> None:
    d = Lab(rs(A))
    conn = d.open()
    cp = d.packet(conn, tcp.RST | tcp.ACK)
    assert cp is not None and (cp.state, cp.timeout) == (tcp.CLOSE, 10)
    assert d.counters(A) == (0, 1, 0)
    d.sim.advance(10.1)
    assert d.entries() == []


def test_a_packet_without_syn_fin_ack_or_rst_moves_to_close() -> None:
    d = Lab(rs(A))
    conn = d.open()
    cp = d.packet(conn, 0x08)  # PSH alone
    assert cp is not None and cp.state == tcp.CLOSE
    assert d.counters(A) == (0, 1, 0)


def test_a_dr_connection_that_sees_a_reply_switches_to_the_input_table() -> None:
    d = Lab(rs(A))
    conn = d.open()
    cp = d.entry(conn)
    assert d.kernel.packet_out(cp, tcp.ACK)  # clears NOOUTPUT
    d.packet(conn, tcp.FIN | tcp.ACK)
    assert cp.state == tcp.CLOSE_WAIT  # INPUT, not INPUT_ONLY's FIN_WAIT


def test_every_packet_rearms_the_connection_timer() -> None:
    d = Lab(rs(A))
    conn = d.open()
    d.sim.advance(800)
    d.packet(conn, tcp.ACK)
    d.sim.advance(800)
    assert len(d.entries()) == 1
    d.sim.advance(100.1)
    assert d.entries() == []


def test_non_syn_packet_of_an_unknown_connection_is_not_scheduled() -> None:
    d = Lab(rs(A))
    assert d.kernel.packet_in(6, ip(CLIENT), 40000, ip(VIP), 80, tcp.ACK) is None
    assert d.kernel.packet_in(6, ip(CLIENT), 40000, ip(VIP), 80, tcp.SYN | tcp.RST) is None
    assert d.entries() == [] and d.counters(A) == (0, 0, 0)


def test_udp_connections_stay_inactive_and_live_300_seconds_after_their_last_packet() -> None:
    d = Lab(rs(A, port=53), protocol="udp", port=53)
    conn = d.open(vport=53, protocol="udp")
    cp = d.entry(conn)
    assert d.counters(A) == (0, 1, 0)
    assert cp.timeout == 300
    d.sim.advance(200)
    d.packet(conn, 0)
    d.sim.advance(299)
    assert d.entries() == [cp] and d.counters(A) == (0, 1, 0)
    d.sim.advance(1.1)
    assert d.entries() == [] and d.counters(A) == (0, 0, 0)


def test_sloppy_tcp_schedules_a_connection_from_a_non_syn_packet() -> None:
    d = Lab(rs(A))
    d.sysctls(sloppy_tcp=True)
    cp = d.kernel.packet_in(6, ip(CLIENT), 40000, ip(VIP), 80, tcp.ACK)
    assert cp is not None and cp.state == tcp.ESTABLISHED
    assert d.kernel.packet_in(6, ip(CLIENT), 40001, ip(VIP), 80, tcp.RST | tcp.ACK) is None


def test_a_new_tcp_timeout_applies_from_a_connections_next_packet() -> None:
    d = Lab(rs(A))
    conn = d.open()
    d.lb.set_timeouts(Timeouts(tcp=100))
    assert d.entry(conn).timeout == 900
    d.packet(conn, tcp.ACK)
    assert d.entry(conn).timeout == 100
    d.sim.advance(100.1)
    assert d.entries() == []


def test_source_port_20_is_never_scheduled() -> None:
    d = Lab(rs(A))
    assert d.syn(port=20) is None


# -- OVERLOAD and the thresholds ----------------------------------------------------------------------------


def staggered(d: Lab, n: int) -> list[Connection]:
    """n connections to the service, closed 10 s apart from t = 0 (DR: each expires 120 s later)."""
    conns = [d.open(f"203.0.113.{10 + i}") for i in range(n)]
    for i, conn in enumerate(conns):
        if i:
            d.sim.advance(10)
        d.sim.disconnect(conn)
    return conns


def test_overload_is_set_by_the_bind_that_reaches_u_threshold() -> None:
    d = Lab(rs(A), rs(B, u_threshold=2))  # list [B, A]
    assert [d.name(d.open(f"203.0.113.{i}")) for i in range(1, 6)] == ["B", "A", "B", "A", "A"]
    assert d.dest(B).overloaded
    assert d.counters(B) == (2, 0, 0)


def test_overload_without_l_threshold_clears_below_three_quarters_of_u_threshold() -> None:
    d = Lab(rs(A, u_threshold=4))
    staggered(d, 4)  # closed at t = 0, 10, 20, 30: they expire at 120, 130, 140, 150
    assert d.dest(A).overloaded
    d.sim.advance(120 - 30 + 0.5)  # 3 left: 3 * 4 < 4 * 3 is false
    assert d.counters(A) == (0, 3, 0) and d.dest(A).overloaded
    d.sim.advance(10)  # 2 left: 8 < 12
    assert d.counters(A) == (0, 2, 0) and not d.dest(A).overloaded


def test_overload_with_l_threshold_clears_below_it() -> None:
    d = Lab(rs(A, u_threshold=4, l_threshold=2))
    staggered(d, 4)
    d.sim.advance(90.5 + 10)  # 2 left: not below l_threshold 2
    assert d.counters(A) == (0, 2, 0) and d.dest(A).overloaded
    d.sim.advance(10)
    assert d.counters(A) == (0, 1, 0) and not d.dest(A).overloaded


def test_overload_is_checked_only_at_bind_so_a_lower_threshold_does_not_set_it() -> None:
    d = Lab(rs(A, u_threshold=10), rs(B))
    assert [d.name(d.open(f"203.0.113.{i}")) for i in (1, 2, 3)] == ["B", "A", "B"]
    d.lb.edit_real_server(d.service, rs(A, u_threshold=1))
    assert not d.dest(A).overloaded  # A holds 1 >= 1, but lowering the threshold never sets it
    assert d.name(d.open("203.0.113.4")) == "A"
    assert d.dest(A).overloaded  # the next bind did
    assert [d.name(d.open(f"203.0.113.{i}")) for i in (5, 6)] == ["B", "B"]


def test_overload_is_cleared_by_raising_or_removing_u_threshold() -> None:
    d = Lab(rs(A, u_threshold=1), rs(B))
    d.open("203.0.113.1")
    d.open("203.0.113.2")
    assert d.dest(A).overloaded
    d.lb.edit_real_server(d.service, rs(A, u_threshold=1))  # the same threshold: stays
    assert d.dest(A).overloaded
    d.lb.edit_real_server(d.service, rs(A, u_threshold=2))  # raised: cleared
    assert not d.dest(A).overloaded
    d.open("203.0.113.3")
    d.open("203.0.113.4")
    assert d.dest(A).overloaded
    d.lb.edit_real_server(d.service, rs(A, u_threshold=0))
    assert not d.dest(A).overloaded


def test_templates_do_not_count_towards_u_threshold() -> None:
    d = Lab(rs(A, u_threshold=2), persistence=Persistence(timeout=300))
    d.open()
    assert d.counters(A) == (1, 0, 1)
    assert not d.dest(A).overloaded


# -- persistence templates ------------------------------------------------------------------------------------


def persistent(*real_servers: RealServer, timeout: int = 300, netmask: str | None = None, **service: Any) -> Lab:
    return Lab(*real_servers, persistence=Persistence(timeout=timeout, netmask=netmask), **service)


def test_template_is_keyed_by_the_client_network() -> None:
    d = persistent(rs(A), rs(B), rs(C), netmask="255.255.255.128")
    assert d.name(d.open("203.0.113.7")) == "C"
    assert d.name(d.open("203.0.113.100")) == "C"  # the same /25: the same template
    assert d.name(d.open("203.0.113.200")) == "B"
    nets = sorted((str(t.caddr), t.cport, t.vport, t.dport, d.name(t)) for t in d.templates())
    assert nets == [("203.0.113.0", 0, 80, 80, "C"), ("203.0.113.128", 0, 80, 80, "B")]
    assert d.counters(C) == (2, 0, 1)


def test_template_is_reused_without_calling_the_scheduler() -> None:
    d = persistent(rs(A), rs(B), rs(C))
    assert [d.name(d.open("203.0.113.7")) for _ in range(3)] == ["C", "C", "C"]
    assert d.name(d.open("203.0.113.8")) == "B"  # rr moved only once
    (t7,) = [t for t in d.templates() if str(t.caddr) == "203.0.113.7"]
    assert t7.n_control == 3


def test_template_timer_is_rearmed_only_by_a_new_connection() -> None:
    d = persistent(rs(A), rs(B), timeout=300)
    conn = d.open()
    (ct,) = d.templates()
    assert ct.expires == 300
    d.sim.advance(200)
    d.packet(conn, tcp.ACK)  # packets do not refresh it
    assert ct.expires == 300
    d.sim.advance(50)
    d.open()
    assert ct.expires == 550


def test_template_expires_after_its_timeout_when_it_controls_nothing() -> None:
    d = persistent(rs(A), rs(B), timeout=300)
    conn = d.open()
    assert d.name(conn) == "B"
    for _ in range(28):
        d.sim.advance(10)
        d.packet(conn, tcp.ACK)  # t = 280
    d.packet(conn, tcp.RST)  # CLOSE: gone at 290
    d.sim.advance(20.5)  # t = 300.5: the template fired at 300 with nothing to control
    assert d.templates() == [] and d.entries() == []
    assert d.name(d.open()) == "A"  # scheduled anew


def test_template_that_still_controls_connections_expires_later_by_60_seconds_for_good() -> None:
    d = persistent(rs(A), rs(B), timeout=100)
    first = d.open()
    (ct,) = d.templates()
    d.sim.advance(100.5)  # fired at 100 while controlling the ESTABLISHED connection
    assert d.templates() == [ct]
    assert (ct.timeout, ct.expires) == (60, 160)
    d.sim.advance(29.5)  # t = 130
    second = d.open()
    assert d.name(second) == d.name(first)
    assert ct.expires == 190  # 130 + 60, not 130 + 100
    d.packet(first, tcp.RST)
    d.packet(second, tcp.RST)  # both gone at 140
    d.sim.advance(59)  # t = 189
    assert d.templates() == [ct]
    d.sim.advance(1.5)
    assert d.templates() == []
    assert d.counters(A) == d.counters(B) == (0, 0, 0)


def test_template_of_a_deleted_dest_is_invalidated_to_port_65535_and_replaced() -> None:
    d = persistent(rs(A), rs(B), timeout=300)
    first = d.open()
    assert d.name(first) == "B"
    (old,) = d.templates()
    d.lb.delete_real_server(d.service, ip(B), 80)
    d.sim.advance(10)
    second = d.open()
    assert d.name(second) == "A"
    assert (old.vport, old.dport, old.cport) == (0xFFFF, 0xFFFF, 0)
    assert old in d.kernel.invalid_templates
    assert old.expires == 300  # not refreshed
    (new,) = d.templates()
    assert new is not old and d.name(new) == "A" and new.vport == 80
    assert d.packet(first, tcp.ACK) is None  # packets to a deleted dest are dropped


def test_template_becomes_valid_again_when_its_dest_is_readded_before_use() -> None:
    d = persistent(rs(A), rs(B), rs(C))
    assert d.name(d.open()) == "C"
    (ct,) = d.templates()
    d.lb.delete_real_server(d.service, ip(C), 80)
    d.lb.add_real_server(d.service, rs(C))  # the same dest object, AVAILABLE again
    assert d.name(d.open()) == "C"
    assert d.templates() == [ct] and ct.vport == 80 and ct.n_control == 2


def test_ipv6_template_is_keyed_by_the_prefix_length() -> None:
    sim = SimBackend()
    lb = Balancer(sim)
    lb.add_service(VirtualService(protocol="tcp", address="2001:db8::80", port=443, scheduler="rr",
                                  persistence=Persistence(netmask=64),
                                  real_servers=[RealServer("2001:db8:f::1", 443), RealServer("2001:db8:f::2", 443)]))
    got = [sim.connect(c, "2001:db8::80", 443) for c in ("2001:db8:1::1", "2001:db8:1:0:ffff::9", "2001:db8:2::1")]
    assert [str(c.real_server) for c in got if c] == ["2001:db8:f::2", "2001:db8:f::2", "2001:db8:f::1"]
    assert sorted(str(t.caddr) for t in sim.director.templates.values()) == ["2001:db8:1::", "2001:db8:2::"]


def test_template_survives_weight_zero_by_default() -> None:
    d = persistent(rs(A), rs(B))
    assert d.name(d.open()) == "B"
    d.lb.edit_real_server(d.service, rs(B, weight=0))
    assert d.name(d.open()) == "B"  # a quiesced dest keeps its clients


def test_template_of_a_quiesced_dest_is_invalidated_with_expire_quiescent_template() -> None:
    d = persistent(rs(A), rs(B))
    assert d.name(d.open()) == "B"
    (old,) = d.templates()
    d.lb.edit_real_server(d.service, rs(B, weight=0))
    d.sysctls(expire_quiescent_template=True)
    assert d.name(d.open()) == "A"
    assert old.vport == 0xFFFF and old in d.kernel.invalid_templates


def test_template_ignores_overload() -> None:
    d = persistent(rs(A), rs(B, u_threshold=1))
    assert d.name(d.open()) == "B"
    assert d.dest(B).overloaded
    assert d.name(d.open()) == "B"
    assert d.name(d.open("203.0.113.99")) == "A"


def test_persistent_ftp_template_has_no_ports() -> None:
    d = persistent(rs(A, port=21), rs(B, port=21), port=21)
    assert d.name(d.open(vport=21)) == "B"
    (ct,) = d.templates()
    assert (ct.vport, ct.dport) == (0, 0)


# -- the dest trash --------------------------------------------------------------------------------------------


def test_readded_dest_comes_back_from_the_trash_with_its_counters_at_the_list_front() -> None:
    d = Lab(rs(A), rs(B), rs(C))
    conns = [d.open(f"203.0.113.{i}") for i in range(1, 4)]
    b = d.dest(B)
    stats = b.stats.live[0]
    d.lb.delete_real_server(d.service, ip(B), 80)
    assert b in d.kernel.trash and not b.available
    assert d.packet(conns[1], tcp.ACK) is None  # dropped while B is deleted
    d.sim.advance(30)
    d.lb.add_real_server(d.service, rs(B, weight=5))
    assert d.dest(B) is b
    assert [NAMES[str(x.address)] for x in d.dests()] == ["B", "C", "A"]
    assert d.counters(B) == (1, 0, 0)
    assert b.weight == 5 and b.available
    assert b.stats.live[0] == stats
    assert d.packet(conns[1], tcp.ACK) is not None  # forwarded again


def test_dest_readded_to_a_recreated_service_keeps_its_counters_but_not_its_stats() -> None:
    d = Lab(rs(A))
    d.open()
    a = d.dest(A)
    assert a.stats.live[0] == 1
    d.lb.delete_service(d.service)
    d.lb.add_service(d.service)
    assert d.dest(A) is a
    assert d.counters(A) == (1, 0, 0)
    assert a.stats.live[0] == 0


def test_unreferenced_dest_is_freed_from_the_trash_about_180_seconds_after_deletion() -> None:
    for wait, revived in ((179, True), (181, False)):
        d = Lab(rs(A), rs(B))
        a = d.dest(A)
        d.lb.delete_real_server(d.service, ip(A), 80)
        d.sim.advance(wait)
        d.lb.add_real_server(d.service, rs(A))
        assert (d.dest(A) is a) is revived, wait


def test_dest_with_connections_stays_in_the_trash() -> None:
    d = Lab(rs(A))
    d.open()
    a = d.dest(A)
    d.lb.delete_real_server(d.service, ip(A), 80)
    d.sim.advance(600)  # the connection (ESTABLISHED, 900 s) still references it
    assert a in d.kernel.trash
    d.lb.add_real_server(d.service, rs(A))
    assert d.dest(A) is a and d.counters(A) == (1, 0, 0)


def test_trash_timer_is_one_timer_rearmed_when_the_trash_refills() -> None:
    d = Lab(rs(A), rs(B))
    b = d.dest(B)
    d.lb.delete_real_server(d.service, ip(A), 80)  # t = 0: trash timer at 60
    d.sim.advance(10)
    d.lb.add_real_server(d.service, rs(A))  # the trash is empty again; the timer is still pending
    d.sim.advance(10)
    d.lb.delete_real_server(d.service, ip(B), 80)  # t = 20: mod_timer -> 80
    # Ticks at 80 (idle_start), 140 (too early), 200 (freed): B is still in the trash at 190.
    d.sim.advance(170)
    d.lb.add_real_server(d.service, rs(B))
    assert d.dest(B) is b


# -- expire_nodest_conn ------------------------------------------------------------------------------------------


def test_connection_to_a_deleted_dest_drops_packets_and_dies_at_its_old_timeout() -> None:
    d = Lab(rs(A), rs(B))
    conn = d.open()
    d.lb.delete_real_server(d.service, conn.real_server, 80)
    d.sim.advance(500)
    assert d.packet(conn, tcp.ACK) is None  # dropped; the timer is not refreshed
    d.sim.advance(399)
    assert len(d.entries()) == 1
    d.sim.advance(1.1)
    assert d.entries() == []


def test_expire_nodest_conn_flushes_connections_of_a_deleted_dest() -> None:
    d = Lab(rs(A), rs(B))
    d.sysctls(expire_nodest_conn=True)
    conn = d.open()
    b = d.dest(B)
    other = d.open("203.0.113.2")
    d.lb.delete_real_server(d.service, conn.real_server, 80)
    d.sim.advance(0.1)
    assert [cp.caddr for cp in d.entries()] == [other.client]
    assert (b.activeconns, b.inactconns) == (0, 0)


def test_expire_nodest_conn_flushes_the_template_with_its_last_connection() -> None:
    d = persistent(rs(A), rs(B))
    d.sysctls(expire_nodest_conn=True)
    d.open()
    b = d.dest(B)
    d.lb.delete_real_server(d.service, ip(B), 80)
    d.sim.advance(0.1)
    assert d.entries() == [] and d.templates() == []
    assert (b.activeconns, b.inactconns, b.persistconns) == (0, 0, 0)


def test_expire_nodest_conn_flushes_a_template_that_controls_nothing() -> None:
    d = persistent(rs(A), rs(B), timeout=300)
    d.sysctls(expire_nodest_conn=True)
    conn = d.open()
    d.packet(conn, tcp.RST)
    d.sim.advance(20)  # the connection is gone, its template (to B) lives until t = 300
    assert d.entries() == [] and len(d.templates()) == 1
    b = d.dest(B)
    d.lb.delete_real_server(d.service, ip(B), 80)
    d.sim.advance(0.1)
    assert d.templates() == [] and not d.kernel.invalid_templates
    assert b.persistconns == 0


def test_expire_nodest_conn_flushes_connections_when_the_whole_service_is_deleted() -> None:
    d = Lab(rs(A))
    d.sysctls(expire_nodest_conn=True)
    d.open()
    a = d.dest(A)
    d.lb.delete_service(d.service)
    d.sim.advance(0.1)
    assert d.entries() == []
    assert (a.activeconns, a.inactconns) == (0, 0)


def test_expire_nodest_conn_reschedules_a_syn_on_the_connection_of_a_deleted_dest() -> None:
    d = Lab(rs(A), rs(B))
    d.sysctls(expire_nodest_conn=True)
    first = d.syn(port=40000)
    assert d.name(first) == "B"
    d.lb.delete_real_server(d.service, ip(B), 80)
    second = d.syn(port=40000)  # before the flush ran
    assert d.name(second) == "A"


def test_expire_nodest_conn_reschedules_a_syn_on_a_connection_to_a_quiesced_dest() -> None:
    d = Lab(rs(A), rs(B))
    d.sysctls(expire_nodest_conn=True)
    conn = d.open(client_port=40000)
    assert d.name(conn) == "B"
    d.lb.edit_real_server(d.service, rs(B, weight=0))
    assert d.name(d.syn(port=40000)) == "A"


def test_syn_on_an_established_connection_to_a_quiesced_dest_is_not_rescheduled_by_default() -> None:
    d = Lab(rs(A), rs(B))
    conn = d.open(client_port=40000)
    d.lb.edit_real_server(d.service, rs(B, weight=0))
    assert d.syn(port=40000) is d.entry(conn)


def test_expire_nodest_conn_reschedules_a_quiesced_dest_even_with_conn_reuse_mode_0() -> None:
    d = Lab(rs(A), rs(B))
    d.sysctls(expire_nodest_conn=True, conn_reuse_mode=0)
    conn = d.open(client_port=40000)
    assert d.name(conn) == "B"
    d.lb.edit_real_server(d.service, rs(B, weight=0))
    assert d.name(d.syn(port=40000)) == "A"


# -- conn_reuse_mode ---------------------------------------------------------------------------------------------


def test_syn_on_a_time_wait_entry_is_rescheduled() -> None:
    d = Lab(nat(A), nat(B))
    conn = d.open(client_port=40000)
    d.sim.disconnect(conn)
    old = d.entry(conn)
    assert old.state == tcp.TIME_WAIT
    new = d.syn(port=40000)
    assert new is not None and new is not old
    assert d.name(conn) == "B" and d.name(new) == "A"
    assert old.expires == d.sim.clock.now()  # expired now
    d.sim.advance(0.01)
    assert d.entries() == [new]


def test_syn_on_a_close_entry_is_rescheduled() -> None:
    d = Lab(rs(A), rs(B))
    conn = d.open(client_port=40000)
    d.packet(conn, tcp.RST)
    assert d.name(d.syn(port=40000)) == "A"


def test_syn_on_a_time_wait_entry_reuses_it_with_conn_reuse_mode_0() -> None:
    d = Lab(nat(A), nat(B))
    d.sysctls(conn_reuse_mode=0)
    conn = d.open(client_port=40000)
    d.sim.disconnect(conn)
    old = d.entry(conn)
    assert d.syn(port=40000) is old
    assert old.state == tcp.SYN_RECV and d.counters(B) == (1, 0, 0)


def test_syn_on_a_dr_fin_wait_entry_is_reused_by_default() -> None:
    d = Lab(rs(A), rs(B))
    conn = d.open(client_port=40000)
    d.sim.disconnect(conn)
    old = d.entry(conn)
    assert old.state == tcp.FIN_WAIT  # a DR director never sees the server's FIN
    assert d.syn(port=40000) is old
    assert old.state == tcp.SYN_RECV and d.counters(B) == (1, 0, 0)


def test_syn_on_a_dr_fin_wait_entry_is_rescheduled_with_conn_reuse_mode_bit_2() -> None:
    d = Lab(rs(A), rs(B))
    d.sysctls(conn_reuse_mode=3)
    conn = d.open(client_port=40000)
    d.sim.disconnect(conn)
    old = d.entry(conn)
    assert old.state == tcp.FIN_WAIT
    new = d.syn(port=40000)
    assert new is not old and d.name(new) == "A"


def test_syn_on_a_nat_fin_wait_entry_is_not_rescheduled_even_with_conn_reuse_mode_bit_2() -> None:
    d = Lab(nat(A), nat(B))
    d.sysctls(conn_reuse_mode=3)
    conn = d.open(client_port=40000)
    d.reply(conn, tcp.FIN | tcp.ACK)  # the server closes first: FIN_WAIT, without NOOUTPUT
    old = d.entry(conn)
    assert old.state == tcp.FIN_WAIT
    assert d.syn(port=40000) is old


def test_syn_on_a_persistent_time_wait_entry_is_not_rescheduled() -> None:
    d = persistent(nat(A), nat(B))
    conn = d.open(client_port=40000)
    d.sim.disconnect(conn)
    old = d.entry(conn)
    assert old.state == tcp.TIME_WAIT and old.control is not None
    assert d.syn(port=40000) is old


# -- service lookup: fwmark, port zero ---------------------------------------------------------------------------


def test_fwmark_service_wins_over_the_address_service() -> None:
    d = Lab(rs(A))
    d.lb.add_service(VirtualService(fwmark=5, scheduler="rr", real_servers=[rs(B, port=0)]))
    assert d.name(d.open(mark=5)) == "B"
    assert d.name(d.open()) == "A"
    assert d.name(d.open(mark=6)) == "A"  # no fwmark service 6: the address service


def test_fwmark_service_keeps_the_packets_port() -> None:
    d = Lab(rs(A, port=0), fwmark=5)
    conn = d.open(vport=8443, mark=5)
    assert (d.name(conn), conn.real_port) == ("A", 8443)


def test_fwmark_template_is_shared_by_tcp_and_udp() -> None:
    d = persistent(rs(A, port=0), rs(B, port=0), fwmark=5)
    tcp_conn = d.open(vport=80, mark=5)
    udp_conn = d.open(vport=53, mark=5, protocol="udp")
    assert d.name(tcp_conn) == d.name(udp_conn) == "B"
    (ct,) = d.templates()
    assert (ct.protocol, ct.vaddr, ct.vport, ct.dport) == (0, 5, 0, 0)
    assert ct.n_control == 2
    assert d.name(d.open("203.0.113.2", vport=53, mark=5, protocol="udp")) == "A"


def test_port_zero_persistent_service_shares_one_template_across_ports_and_keeps_them() -> None:
    d = persistent(rs(A, port=0), rs(B, port=0), port=0)
    web, mail = d.open(vport=80), d.open(vport=443)
    assert (d.name(web), web.real_port) == ("B", 80)
    assert (d.name(mail), mail.real_port) == ("B", 443)
    (ct,) = d.templates()
    assert (ct.vport, ct.dport, ct.n_control) == (0, 0, 2)


def test_port_zero_persistent_service_ignores_a_nat_real_servers_port() -> None:
    d = persistent(nat(A, port=8080), port=0)
    conn = d.open(vport=80)
    assert conn.real_port == 80  # the packet's port: it differs from the service's port 0


def test_nat_real_server_port_replaces_the_virtual_port() -> None:
    d = persistent(nat(A, port=8080))
    conn = d.open()
    assert conn.real_port == 8080
    (ct,) = d.templates()
    assert ct.dport == 8080


# -- one-packet scheduling ---------------------------------------------------------------------------------------


def test_one_packet_udp_schedules_every_datagram_and_keeps_no_entry() -> None:
    d = Lab(rs(A, port=53), rs(B, port=53), rs(C, port=53), protocol="udp", port=53, one_packet=True)
    names = [d.name(d.open(vport=53, client_port=5353, protocol="udp")) for _ in range(4)]
    assert names == ["C", "B", "A", "C"]
    assert d.entries() == []
    assert all(d.counters(x) == (0, 0, 0) for x in (A, B, C))
    assert d.dest(C).stats.live[0] == 2


def test_udp_without_one_packet_keeps_the_client_on_its_entry() -> None:
    d = Lab(rs(A, port=53), rs(B, port=53), protocol="udp", port=53)
    names = [d.name(d.open(vport=53, client_port=5353, protocol="udp")) for _ in range(3)]
    assert names == ["B", "B", "B"]
    assert len(d.entries()) == 1 and d.counters(B) == (0, 1, 0)


def test_one_packet_udp_with_persistence_keeps_only_the_template() -> None:
    d = persistent(rs(A, port=53), rs(B, port=53), protocol="udp", port=53, one_packet=True)
    names = [d.name(d.open(vport=53, client_port=5353 + i, protocol="udp")) for i in range(3)]
    assert names == ["B", "B", "B"]
    assert d.entries() == []
    (ct,) = d.templates()
    assert ct.n_control == 0 and d.counters(B) == (0, 0, 1)


def test_one_packet_applies_to_udp_only_on_a_fwmark_service() -> None:
    d = Lab(rs(A, port=0), rs(B, port=0), fwmark=5, one_packet=True)
    d.open(vport=80, mark=5)
    assert len(d.entries()) == 1
    d.open(vport=53, mark=5, protocol="udp")
    assert len(d.entries()) == 1
