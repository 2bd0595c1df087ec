"""ipvsadm's listings of the simulator's snapshot: -Ln (and its variants), -Lnc, --timeout, /proc/net/ip_vs_conn.

The expected text follows ipvsadm 1.31's printf formats (print_title, print_service_entry,
print_largenum, print_conn) and the kernel's ip_vs_conn_seq_show(), as ipvs-notes §4.6-4.7 and
§5.3 give them; trailing spaces are part of the format.
"""

from __future__ import annotations

import ipaddress

import pytest

from lbcore import (
    Balancer,
    Persistence,
    RealServer,
    ServiceNotFound,
    Timeouts,
    Tunnel,
    VirtualService,
)
from lbcore.backend import Listings
from lbcore.errors import ParseError
from lbcore.formats.listing import (
    RealServerStats,
    ServiceStats,
    Snapshot,
    Stats,
    _inet_ntop6,
    _largenum,
    connections,
    layer4_report,
    layer4_status,
    parse_proc_ip_vs_conn,
    proc_ip_vs_conn,
    status,
    timeout,
)
from lbcore.sim import SimBackend

VERSION = "IP Virtual Server version 1.2.1 (size=4096)"
PROC_HEADER = "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData"
TITLE = [
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
]
LNC_TITLE = [
    "IPVS connection entries",
    "pro expire state       source             virtual            destination",
]

# The Loadbalancer.org guide's Option 1A: a DR VIP with source-IP persistence.
DR = VirtualService("tcp", "192.0.2.10", 80, scheduler="wlc", persistence=Persistence(300),
                    real_servers=[RealServer("198.51.100.10", 80), RealServer("198.51.100.11", 80)])
NAT = VirtualService("tcp", "192.0.2.20", 443, scheduler="wrr", real_servers=[
    RealServer("198.51.100.20", 8443, weight=2, forward="nat", u_threshold=100, l_threshold=50),
    RealServer("198.51.100.21", 8443, weight=1, forward="nat"),
])
FWM = VirtualService(fwmark=1, scheduler="rr", persistence=Persistence(300, netmask="255.255.255.0"),
                     real_servers=[RealServer("198.51.100.30", 0)])
V6 = VirtualService("tcp", "2001:db8::10", 80, real_servers=[RealServer("2001:db8::11", 80)])


def text(*lines: str) -> str:
    return "".join(f"{line}\n" for line in lines)


def connections_from_proc(proc: str, *, persistent_conn: bool = False) -> str:
    """ipvsadm -Lnc as ipvsadm makes it: from the text of /proc/net/ip_vs_conn."""
    return connections(Snapshot(connections=parse_proc_ip_vs_conn(proc)), persistent_conn=persistent_conn)


@pytest.fixture
def sim() -> SimBackend:
    """The four services, one connection each, all opened at t=0 (added in the order NAT, FWM,
    V6, DR, so the listing's order is ipvsadm's sort and not the order of addition)."""
    sim = SimBackend()
    lb = Balancer(sim)
    for svc in (NAT, FWM, V6, DR):
        lb.add_service(svc)
    sim.connect("203.0.113.5", "192.0.2.10", 80, client_port=40000)
    sim.connect("203.0.113.6", "192.0.2.20", 443, client_port=40001)
    sim.connect("203.0.113.7", "192.0.2.99", 80, client_port=40002, mark=1)
    sim.connect("2001:db8:1::5", "2001:db8::10", 80, client_port=40003)
    return sim


# -- ipvsadm -Ln -----------------------------------------------------------------------------------


def test_status_lists_services_sorted_and_real_servers_sorted_by_address(sim: SimBackend) -> None:
    # wlc ties go to the newest real server (.11); wrr's first round after the adds does too.
    assert status(sim.snapshot()) == text(
        VERSION,
        *TITLE,
        "TCP  192.0.2.10:80 wlc persistent 300",
        "  -> 198.51.100.10:80             Route   1      0          0         ",
        "  -> 198.51.100.11:80             Route   1      1          0         ",
        "TCP  192.0.2.20:443 wrr",
        "  -> 198.51.100.20:8443           Masq    2      0          0         ",
        "  -> 198.51.100.21:8443           Masq    1      1          0         ",
        "TCP  [2001:db8::10]:80 wlc",
        "  -> [2001:db8::11]:80            Route   1      1          0         ",
        "FWM  1 rr persistent 300 mask 255.255.255.0",
        "  -> 198.51.100.30:0              Route   1      1          0         ",
    )


def test_status_nosort_lists_services_as_added_and_real_servers_newest_first(sim: SimBackend) -> None:
    assert status(sim.snapshot(), nosort=True) == text(
        VERSION,
        *TITLE,
        "TCP  192.0.2.20:443 wrr",
        "  -> 198.51.100.21:8443           Masq    1      1          0         ",
        "  -> 198.51.100.20:8443           Masq    2      0          0         ",
        "FWM  1 rr persistent 300 mask 255.255.255.0",
        "  -> 198.51.100.30:0              Route   1      1          0         ",
        "TCP  [2001:db8::10]:80 wlc",
        "  -> [2001:db8::11]:80            Route   1      1          0         ",
        "TCP  192.0.2.10:80 wlc persistent 300",
        "  -> 198.51.100.11:80             Route   1      1          0         ",
        "  -> 198.51.100.10:80             Route   1      0          0         ",
    )


def test_closed_connection_moves_from_active_to_inactive(sim: SimBackend) -> None:
    conn = sim.connect("203.0.113.8", "192.0.2.20", 443, client_port=40004)
    assert conn is not None and conn.endpoint == "198.51.100.20:8443"
    sim.disconnect(conn)
    lines = status(sim.snapshot()).splitlines()
    assert "  -> 198.51.100.20:8443           Masq    2      0          1         " in lines


def test_stats_stay_zero_until_the_estimator_takes_its_two_second_snapshot(sim: SimBackend) -> None:
    sim.advance(1.9)
    assert "TCP  192.0.2.10:80                       0        0        0        0        0" in (
        status(sim.snapshot(), stats=True).splitlines())


def test_stats_list_conns_packets_and_bytes_after_two_seconds(sim: SimBackend) -> None:
    sim.advance(2)
    # A DR connection is SYN (60 bytes) + ACK (52) in and nothing out; NAT adds the SYN+ACK out.
    # IPv6 headers are 20 bytes longer: 80 + 72.
    assert status(sim.snapshot(), stats=True) == text(
        VERSION,
        "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
        "  -> RemoteAddress:Port",
        "TCP  192.0.2.10:80                       1        2        0      112        0",
        "  -> 198.51.100.10:80                    0        0        0        0        0",
        "  -> 198.51.100.11:80                    1        2        0      112        0",
        "TCP  192.0.2.20:443                      1        2        1      112       60",
        "  -> 198.51.100.20:8443                  0        0        0        0        0",
        "  -> 198.51.100.21:8443                  1        2        1      112       60",
        "TCP  [2001:db8::10]:80                   1        2        0      152        0",
        "  -> [2001:db8::11]:80                   1        2        0      152        0",
        "FWM  1                                   1        2        0      112        0",
        "  -> 198.51.100.30:0                     1        2        0      112        0",
    )


def test_rate_shows_the_estimator_averages_per_second() -> None:
    sim = SimBackend()
    Balancer(sim).add_service(NAT)
    for port in range(40000, 40040):
        sim.connect("203.0.113.5", "192.0.2.20", 443, client_port=port)
    sim.advance(2)
    # 40 conns in 2 s: 20/s, of which the first EWMA step (1/4) shows 5. 80 packets in, 40 out;
    # 40 * 112 bytes in and 40 * 60 out. wrr sends 26 of them to .20 and 14 to .21.
    assert status(sim.snapshot(), rate=True) == text(
        VERSION,
        "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
        "  -> RemoteAddress:Port",
        "TCP  192.0.2.20:443                      5       10        5      560      300",
        "  -> 198.51.100.20:8443                  3        6        3      364      195",
        "  -> 198.51.100.21:8443                  2        3        2      196      105",
    )


def test_thresholds_list_upper_and_lower_thresholds(sim: SimBackend) -> None:
    assert status(sim.snapshot(), thresholds=True).splitlines()[1:8] == [
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  192.0.2.10:80 wlc persistent 300",
        "  -> 198.51.100.10:80             0          0          0          0         ",
        "  -> 198.51.100.11:80             0          0          1          0         ",
        "TCP  192.0.2.20:443 wrr",
        "  -> 198.51.100.20:8443           100        50         0          0         ",
    ]


def test_persistent_conn_counts_the_templates_of_each_real_server(sim: SimBackend) -> None:
    assert status(sim.snapshot(), persistent_conn=True) == text(
        VERSION,
        "Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  192.0.2.10:80 wlc persistent 300",
        "  -> 198.51.100.10:80             1         0           0          0         ",
        "  -> 198.51.100.11:80             1         1           1          0         ",
        "TCP  192.0.2.20:443 wrr",
        "  -> 198.51.100.20:8443           2         0           0          0         ",
        "  -> 198.51.100.21:8443           1         0           1          0         ",
        "TCP  [2001:db8::10]:80 wlc",
        "  -> [2001:db8::11]:80            1         0           1          0         ",
        "FWM  1 rr persistent 300 mask 255.255.255.0",
        "  -> 198.51.100.30:0              1         1           1          0         ",
    )


def test_stats_win_over_rate_when_both_are_asked_for(sim: SimBackend) -> None:
    assert status(sim.snapshot(), stats=True, rate=True) == status(sim.snapshot(), stats=True)


def test_tun_info_names_each_tunnel_and_na_for_others() -> None:
    sim = SimBackend()
    Balancer(sim).add_service(VirtualService("tcp", "192.0.2.40", 80, scheduler="rr", real_servers=[
        RealServer("198.51.100.41", 80, forward="tunnel"),
        RealServer("198.51.100.42", 80, forward="tunnel", tunnel=Tunnel("gue", 6080, "remcsum")),
        RealServer("198.51.100.43", 80, forward="tunnel", tunnel=Tunnel("gre", 0, "csum")),
        RealServer("198.51.100.44", 80),
    ]))
    assert status(sim.snapshot(), tun_info=True) == text(
        VERSION,
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn",
        "TCP  192.0.2.40:80 rr",
        "  -> 198.51.100.41:80             Tunnel  ipip          1      0          0         ",
        "  -> 198.51.100.42:80             Tunnel  gue:6080:r+c  1      0          0         ",
        "  -> 198.51.100.43:80             Tunnel  gre:+c        1      0          0         ",
        "  -> 198.51.100.44:80             Route   n/a           1      0          0         ",
    )


def test_service_line_shows_scheduler_flags_persistence_engine_and_ops() -> None:
    sim = SimBackend()
    lb = Balancer(sim)
    lb.add_service(VirtualService("udp", "192.0.2.60", 5060, scheduler="rr", one_packet=True,
                                  persistence=Persistence(360, engine="sip")))
    lb.add_service(VirtualService("tcp", "192.0.2.61", 80, scheduler="sh", flags=["sh-fallback", "sh-port"]))
    lb.add_service(VirtualService("tcp", "2001:db8::61", 80, scheduler="mh", flags=["mh-port"],
                                  persistence=Persistence(60, netmask=64)))
    lb.add_service(VirtualService(fwmark=3000000000, scheduler="wlc"))
    lb.add_service(VirtualService(fwmark=2, family=6, scheduler="lc"))
    # 1.31 prints marks with %d, and its comparator's wrapped difference sorts 3000000000 first.
    assert status(sim.snapshot()).splitlines()[3:] == [
        "FWM  -1294967296 wlc",
        "TCP  192.0.2.61:80 sh (sh-fallback,sh-port)",
        "UDP  192.0.2.60:5060 rr persistent 360 pe sip ops",
        "TCP  [2001:db8::61]:80 mh (mh-port) persistent 60 mask 64",
        "FWM  2 IPv6 lc",
    ]


def test_exact_prints_large_counters_in_full() -> None:
    sim = SimBackend()
    Balancer(sim).add_service(NAT)
    svc = sim.director.services[NAT.key]
    svc.stats.shown = [7, 123_456_789, 99_999_999, 1_234_567_890_123, 0]  # the estimator's snapshot
    assert status(sim.snapshot(), stats=True).splitlines()[3] == (
        "TCP  192.0.2.20:443                      7  123456K 99999999    1234G        0")
    assert status(sim.snapshot(), stats=True, exact=True).splitlines()[3] == (
        "TCP  192.0.2.20:443                      7 123456789 99999999 1234567890123        0")


@pytest.mark.parametrize(("value", "want"), [
    (0, "        0"),
    (99_999_999, " 99999999"),
    (100_000_000, "  100000K"),
    (999_999_999, "  999999K"),
    (1_000_000_000, "    1000M"),
    (99_999_999_999, "   99999M"),
    (100_000_000_000, "     100G"),
    (99_999_999_999_999, "   99999G"),
    (100_000_000_000_000, "     100T"),
])
def test_largenum_switches_units_at_ipvsadms_limits(value: int, want: str) -> None:
    assert _largenum(value, exact=False) == want


def test_timeout_lists_tcp_tcpfin_and_udp_timeouts() -> None:
    sim = SimBackend()
    assert timeout(sim.snapshot()) == "Timeout (tcp tcpfin udp): 900 120 300\n"
    Balancer(sim).set_timeouts(Timeouts(3600, 60, 120))
    assert timeout(sim.snapshot()) == "Timeout (tcp tcpfin udp): 3600 60 120\n"


def test_zero_restarts_the_counters_from_the_last_snapshot(sim: SimBackend) -> None:
    sim.advance(2)
    sim.zero(NAT)
    lines = sim.status(stats=True).splitlines()
    assert "TCP  192.0.2.20:443                      0        0        0        0        0" in lines
    assert "TCP  192.0.2.10:80                       1        2        0      112        0" in lines
    sim.zero()
    assert "TCP  192.0.2.10:80                       0        0        0        0        0" in (
        sim.status(stats=True).splitlines())


def test_zero_of_an_unknown_service_raises_service_not_found(sim: SimBackend) -> None:
    with pytest.raises(ServiceNotFound):
        sim.zero(VirtualService("tcp", "192.0.2.99", 80))


def test_sim_backend_status_passes_its_options_on(sim: SimBackend) -> None:
    assert sim.status(persistent_conn=True, nosort=True) == status(
        sim.snapshot(), persistent_conn=True, nosort=True)


# -- ipvsadm -Lnc and /proc/net/ip_vs_conn --------------------------------------------------------------


def test_connections_list_templates_and_connections_with_the_time_left(sim: SimBackend) -> None:
    sim.advance(0.5)
    # Sorted by protocol (IP before TCP), source, virtual, destination; 299.5 s left shows 04:59.
    assert connections(sim.snapshot()) == text(
        *LNC_TITLE,
        "IP  04:59  ASSURED     203.0.113.0:0      0.0.0.1:0          198.51.100.30:0",
        "TCP 04:59  ASSURED     203.0.113.5:0      192.0.2.10:80      198.51.100.11:80",
        "TCP 14:59  ESTABLISHED 203.0.113.5:40000  192.0.2.10:80      198.51.100.11:80",
        "TCP 14:59  ESTABLISHED 203.0.113.6:40001  192.0.2.20:443     198.51.100.21:8443",
        "TCP 14:59  ESTABLISHED 203.0.113.7:40002  192.0.2.99:80      198.51.100.30:80",
        "TCP 14:59  ESTABLISHED [2001:db8:1::5]:40003 [2001:db8::10]:80  [2001:db8::11]:80",
    )


def test_proc_ip_vs_conn_prints_addresses_and_ports_in_hex(sim: SimBackend) -> None:
    sim.advance(0.5)
    assert proc_ip_vs_conn(sim.snapshot()) == text(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData",
        "IP  CB007100 0000 00000001 0000 C633641E 0000 ASSURED         299",
        "TCP CB007105 0000 C000020A 0050 C633640B 0050 ASSURED         299",
        "TCP CB007105 9C40 C000020A 0050 C633640B 0050 ESTABLISHED     899",
        "TCP CB007106 9C41 C0000214 01BB C6336415 20FB ESTABLISHED     899",
        "TCP CB007107 9C42 C0000263 0050 C633641E 0050 ESTABLISHED     899",
        "TCP 2001:0db8:0001:0000:0000:0000:0000:0005 9C43 2001:0db8:0000:0000:0000:0000:0000:0010 0050 "
        "2001:0db8:0000:0000:0000:0000:0000:0011 0050 ESTABLISHED     899",
    )


def test_connections_are_ipvsadms_reading_of_proc_ip_vs_conn(sim: SimBackend) -> None:
    assert connections(sim.snapshot()) == connections_from_proc(proc_ip_vs_conn(sim.snapshot()))


def test_invalidated_template_shows_port_65535_after_its_real_server_is_deleted(sim: SimBackend) -> None:
    sim.advance(0.5)
    Balancer(sim).delete_real_server(DR, ipaddress.ip_address("198.51.100.11"), 80)
    # The client's next connection finds its template's real server gone: the template is
    # re-keyed to port 65535 (and no longer refreshed), and a new one is made.
    conn = sim.connect("203.0.113.5", "192.0.2.10", 80, client_port=40010)
    assert conn is not None and conn.endpoint == "198.51.100.10:80"
    lines = [line for line in connections(sim.snapshot()).splitlines() if "192.0.2.10:" in line]
    assert lines == [
        "TCP 05:00  ASSURED     203.0.113.5:0      192.0.2.10:80      198.51.100.10:80",
        "TCP 04:59  ASSURED     203.0.113.5:0      192.0.2.10:65535   198.51.100.11:65535",
        "TCP 14:59  ESTABLISHED 203.0.113.5:40000  192.0.2.10:80      198.51.100.11:80",
        "TCP 15:00  ESTABLISHED 203.0.113.5:40010  192.0.2.10:80      198.51.100.10:80",
    ]
    invalidated = "TCP CB007105 0000 C000020A FFFF C633640B FFFF ASSURED         299\n"
    assert invalidated in proc_ip_vs_conn(sim.snapshot())


def test_closing_client_leaves_fin_wait_and_udp_shows_its_one_state() -> None:
    sim = SimBackend()
    lb = Balancer(sim)
    lb.add_service(VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.10", 80)]))
    lb.add_service(VirtualService("udp", "192.0.2.53", 53, scheduler="rr",
                                  real_servers=[RealServer("198.51.100.53", 53, forward="nat")]))
    conn = sim.connect("203.0.113.5", "192.0.2.10", 80, client_port=40000)
    assert conn is not None
    sim.disconnect(conn)
    sim.connect("203.0.113.5", "192.0.2.53", 53, protocol="udp", client_port=40001, payload=40)
    assert connections(sim.snapshot()).splitlines()[2:] == [
        "TCP 02:00  FIN_WAIT    203.0.113.5:40000  192.0.2.10:80      198.51.100.10:80",
        "UDP 05:00  UDP         203.0.113.5:40001  192.0.2.53:53      198.51.100.53:53",
    ]


def test_expire_minutes_are_not_capped_at_an_hour() -> None:
    sim = SimBackend()
    lb = Balancer(sim)
    lb.add_service(VirtualService("tcp", "192.0.2.10", 80, real_servers=[RealServer("198.51.100.10", 80)]))
    lb.set_timeouts(Timeouts(10000, 120, 300))
    sim.connect("203.0.113.5", "192.0.2.10", 80, client_port=40000)
    assert connections(sim.snapshot()).splitlines()[2] == (
        "TCP 166:40 ESTABLISHED 203.0.113.5:40000  192.0.2.10:80      198.51.100.10:80")


def test_expired_connections_are_no_longer_listed(sim: SimBackend) -> None:
    sim.advance(961)
    # The templates outlive their 300 s while they control connections (retrying every 60 s);
    # the connections go at 900 s, the templates by 960 s.
    assert connections(sim.snapshot()) == text(*LNC_TITLE)
    assert "  -> 198.51.100.11:80             Route   1      0          0         " in (
        status(sim.snapshot()).splitlines())


def test_ipv6_fwmark_template_holds_the_mark_in_its_first_32_bits() -> None:
    sim = SimBackend()
    Balancer(sim).add_service(VirtualService(fwmark=2, family=6, scheduler="rr", persistence=Persistence(300),
                                             real_servers=[RealServer("2001:db8::21", 0)]))
    sim.connect("2001:db8:1::5", "2001:db8::20", 80, client_port=40000, mark=2)
    assert connections(sim.snapshot()).splitlines()[2] == (
        "IP  05:00  ASSURED     [2001:db8:1::5]:0  [0:2::]:0          [2001:db8::21]:0")


def test_persistent_conn_header_adds_the_engine_columns() -> None:
    proc = text(
        "Pro FromIP   FPrt ToIP     TPrt DestIP   DPrt State       Expires PEName PEData",
        "UDP C0000201 13C4 C000023C 13C4 C633643C 13C4 UDP             299 sip abc@192.0.2.1",
        "UDP C0000202 13C4 C000023C 13C4 C633643C 13C4 UDP             299",
    )
    assert connections_from_proc(proc, persistent_conn=True) == text(
        "IPVS connection entries",
        "pro expire state       source             virtual            destination        "
        "pe name          pe_data",
        "UDP 04:59  UDP         192.0.2.1:5060     192.0.2.60:5060    198.51.100.60:5060 "
        "sip                abc@192.0.2.1",
        "UDP 04:59  UDP         192.0.2.2:5060     192.0.2.60:5060    198.51.100.60:5060",
    )


@pytest.mark.parametrize(("address", "want"), [
    ("2001:db8::1", "2001:db8::1"),
    ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
    ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
    ("::1", "::1"),
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ("::192.0.2.1", "::192.0.2.1"),
])
def test_ipv6_addresses_are_written_as_glibc_inet_ntop_writes_them(address: str, want: str) -> None:
    assert _inet_ntop6(ipaddress.IPv6Address(address)) == want


# -- the snapshot ---------------------------------------------------------------------------------------


def test_sim_backend_declares_the_listings_feature(sim: SimBackend) -> None:
    assert isinstance(sim, Listings)


def test_snapshot_holds_each_real_server_with_its_connection_counts(sim: SimBackend) -> None:
    snapshot = sim.snapshot()
    dr = next(s for s in snapshot.services if s.service.key == DR.key)
    # The kernel's list order: the newest real server first.
    assert [(str(rs.real_server.address), rs.active, rs.inactive, rs.persistent) for rs in dr.real_servers] == [
        ("198.51.100.11", 1, 0, 1), ("198.51.100.10", 0, 0, 0)]
    assert dr.service.real_servers == ()
    assert snapshot.timeouts == Timeouts() and snapshot.conn_tab_size == 4096
    assert len(snapshot.connections) == 6


def test_proc_ip_vs_conn_reads_back_into_the_same_entries(sim: SimBackend) -> None:
    snapshot = sim.snapshot()
    assert parse_proc_ip_vs_conn(proc_ip_vs_conn(snapshot)) == snapshot.connections


@pytest.mark.parametrize(("line", "field"), [
    ("TCP C0000201 13C4 C000023C 13C4 C633643C", "line"),
    ("TCP C0000201 13C4 C000023C 13C4 C633643C 13C4 ESTABLISHED soon", "Expires"),
    ("XTP C0000201 13C4 C000023C 13C4 C633643C 13C4 ESTABLISHED 10", "Pro"),
    ("TCP C00002Z1 13C4 C000023C 13C4 C633643C 13C4 ESTABLISHED 10", "FromIP"),
])
def test_a_malformed_proc_line_raises_parse_error_naming_line_and_field(line: str, field: str) -> None:
    with pytest.raises(ParseError) as caught:
        parse_proc_ip_vs_conn(f"{PROC_HEADER}\n{line}\n")
    assert caught.value.owner == "/proc/net/ip_vs_conn line 2"
    assert caught.value.field == field


def test_status_of_a_hand_made_snapshot_needs_no_simulator() -> None:
    snapshot = Snapshot(services=[ServiceStats(
        VirtualService("tcp", "192.0.2.10", 80, scheduler="rr"),
        [RealServerStats(RealServer("198.51.100.10", 80, weight=3), active=7, inactive=2,
                         stats=Stats(conns=12, inpkts=3, cps=1))],
        Stats(conns=12))])
    assert status(snapshot).splitlines()[3:] == [
        "TCP  192.0.2.10:80 rr",
        "  -> 198.51.100.10:80             Route   3      7          2         "]
    assert status(snapshot, rate=True).splitlines()[4] == (
        "  -> 198.51.100.10:80                    1        0        0        0        0")


def test_ipvs_backend_reads_the_table_size_from_proc_net_ip_vs() -> None:
    from lbcore_ipvs import _conn_tab_size

    assert _conn_tab_size("IP Virtual Server version 1.2.1 (size=4096)\nProt LocalAddress:Port ...\n") == 4096
    with pytest.raises(ParseError) as caught:
        _conn_tab_size("IP Virtual Server version 1.2.1\n")
    assert caught.value.owner == "/proc/net/ip_vs line 1" and caught.value.field == "size"


def test_ipvs_backend_takes_the_kernels_stats64_nest_as_stats() -> None:
    from lbcore_ipvs import _stats

    kernel = {"conns": 7, "inpkts": 27, "outpkts": 17, "inbytes": 1460, "outbytes": 1024, "cps": 1}
    assert _stats(kernel) == Stats(conns=7, inpkts=27, outpkts=17, inbytes=1460, outbytes=1024, cps=1)


def test_layer4_report_is_the_guides_two_reports_titled_in_order(sim: SimBackend) -> None:
    sim.advance(2)  # the counters' snapshot
    snap = sim.snapshot()
    stats, plain, current = status(snap, stats=True), status(snap), connections(snap)
    assert layer4_status(snap) == f"{stats}\n{plain}"
    assert layer4_report(snap) == (f"Layer 4 Status\n{stats}\n{plain}\nLayer 4 Current Connections\n{current}")
    assert "203.0.113.5:40000" in current and "Conns" in stats
