"""The simulated IPVS data plane: services, dests, connections, templates and timers.

Each method mirrors one path of net/netfilter/ipvs (named in its docstring); the schedulers are in
:mod:`lbcore.sim.schedulers`. Control changes arrive already checked by :func:`lbcore.ops.apply_op`,
so nothing here refuses anything.
"""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
from collections.abc import Callable, Iterator

from lbcore.enums import Protocol
from lbcore.model import IPAddress, RealServer, ServiceKey, Sysctls, Timeouts, VirtualService
from lbcore.sim import tcp
from lbcore.sim.profile import LINUX_6_1, KernelProfile
from lbcore.sim.schedulers import Packet, scheduler_class
from lbcore.sim.state import AVAILABLE, SVC_ONEPACKET, Dest, SimService, Stats

TCP, UDP, SCTP = 6, 17, 132
FTPPORT, FTPDATA = 21, 20
# IP_VS_CONN_F_* bits the simulator needs.
F_NOOUTPUT = 0x0080
F_INACTIVE = 0x0100
F_TEMPLATE = 0x1000
F_ONE_PACKET = 0x2000
INVALID_PORT = 0xFFFF  # an invalidated template's vport and dport
TRASH_PERIOD = 120.0  # IP_VS_DEST_TRASH_PERIOD; the trash timer runs every half of it
EXPIRE_LATER = 60.0  # an entry that still controls others retries after 60 s, from then on
ESTIMATOR_PERIOD = 2.0


class Conn:
    """A connection or persistence template (struct ip_vs_conn)."""

    __slots__ = (
        "caddr",
        "control",
        "cport",
        "dead",
        "dest",
        "dport",
        "expires",
        "flags",
        "heap_at",
        "key",
        "n_control",
        "protocol",
        "state",
        "timeout",
        "vaddr",
        "vport",
    )

    def __init__(self, key: ConnKey, protocol: int, caddr: IPAddress, cport: int,
                 vaddr: object, vport: int, dest: Dest, dport: int, flags: int) -> None:
        self.key = key
        self.protocol = protocol
        self.caddr = caddr
        self.cport = cport
        self.vaddr = vaddr  # an address, or the fwmark (an int) for a fwmark template
        self.vport = vport
        self.dest = dest
        self.dport = dport
        self.flags = flags
        self.state = 0
        self.timeout = 3.0  # ip_vs_conn_new(); the first packet replaces it
        self.expires = 0.0
        self.heap_at = float("inf")
        self.control: Conn | None = None
        self.n_control = 0
        self.dead = False

    @property
    def daddr(self) -> IPAddress:
        """The real server's address."""
        return self.dest.address

    @property
    def template(self) -> bool:
        return bool(self.flags & F_TEMPLATE)


TimerItem = Conn | Callable[[float], None]
ConnKey = int
V6 = 1 << 128  # marks an IPv6 address in a key, so no IPv4 address can equal it


def addr_key(address: IPAddress) -> int:
    """An address as a key: hashing ints is far cheaper than hashing ipaddress objects."""
    return int(address) if address.version == 4 else int(address) | V6


def conn_key(protocol: int, saddr: IPAddress, sport: int, daddr: IPAddress, dport: int) -> ConnKey:
    """(protocol, caddr, cport, vaddr, vport) packed into one int: smaller than a tuple of five."""
    return ((((addr_key(saddr) << 16 | sport) << 129 | addr_key(daddr)) << 16 | dport) << 8) | protocol


def unpack_key(key: ConnKey) -> tuple[int, int, int, int, int]:
    """(protocol, caddr, cport, vaddr, vport) of a :func:`conn_key` (addresses as addr_keys)."""
    return (key & 0xFF, key >> 169, (key >> 153) & 0xFFFF, (key >> 24) & ((1 << 129) - 1), (key >> 8) & 0xFFFF)


def address_of(key: int) -> IPAddress:
    """The address an :func:`addr_key` stands for."""
    return ipaddress.IPv6Address(key & ~V6) if key & V6 else ipaddress.IPv4Address(key)


class Director:
    """One network namespace's IPVS, on a virtual clock.

    Args:
        now: the clock's reading function.
        seed: seed of the random source (only twos draws from it).
        profile: the kernel release and build options to reproduce.
    """

    def __init__(self, now: Callable[[], float], seed: int = 0, profile: KernelProfile = LINUX_6_1) -> None:
        self.now = now
        self.profile = profile
        self.random = random.Random(seed)
        self.sysctls = Sysctls()
        self.timeouts = [float(t) for t in tcp.DEFAULT_TIMEOUTS]
        self.udp_timeout = 300.0
        self.services: dict[ServiceKey, SimService] = {}
        self._by_addr: dict[tuple[int, int, int], SimService] = {}
        self._by_mark: dict[tuple[int, int], SimService] = {}
        self._ftp_services = 0
        self._null_services = 0
        self.conns: dict[ConnKey, Conn] = {}
        self.templates: dict[ConnKey, Conn] = {}
        self.invalid_templates: set[Conn] = set()
        self.trash: list[Dest] = []
        self._trash_due = 0.0
        self.stats = Stats()
        self._heap: list[tuple[float, int, TimerItem]] = []
        self._seq = 0
        self._estimate_tick = self._estimate  # one bound method, so run_timers knows its entries
        #: Run the estimator's idle ticks as one step (False: one by one, as the kernel does; the
        #: answers are the same, which the tests check).
        self.skip_idle = True
        self.call_at(self.now() + ESTIMATOR_PERIOD, self._estimate_tick)

    # -- timers ----------------------------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[float], None]) -> None:
        """Run ``callback(when)`` once the clock reaches ``when``."""
        self._seq += 1
        heapq.heappush(self._heap, (when, self._seq, callback))

    def _arm(self, cp: Conn, when: float) -> None:
        # mod_timer(): the heap keeps one entry per connection at its earliest time; a later
        # expiry is found when that entry fires, so a packet costs no heap push.
        cp.expires = when
        if when < cp.heap_at:
            cp.heap_at = when
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, cp))

    def run_timers(self, until: float) -> None:
        """Fire every timer due at or before ``until``, in time order.

        The estimator's ticks between two other timers (or up to ``until``) run as one step
        (:meth:`_estimate_run`), so an idle gap costs the same whatever its length.
        """
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, item = heapq.heappop(heap)
            if item is self._estimate_tick and self.skip_idle:
                self._estimate_run(when, min(until, heap[0][0]) if heap else until)
                continue
            if type(item) is Conn:
                if item.dead or item.heap_at != when:
                    continue  # superseded by an earlier entry
                if item.expires > when:
                    item.heap_at = item.expires
                    self._seq += 1
                    heapq.heappush(heap, (item.expires, self._seq, item))
                    continue
                item.heap_at = float("inf")
                self._expire(item, when)
            else:
                item(when)  # type: ignore[operator]

    def _estimate(self, now: float) -> None:
        # The estimator (ip_vs_est.c) snapshots every counter every 2 s.
        self._estimate_run(now, now)

    def _estimate_run(self, first: float, limit: float) -> None:
        """The estimator's ticks from ``first`` on: every one due by ``limit`` (inclusive), but before
        the next other timer when ``limit`` is that timer's time; then the next tick is queued.

        Nothing else runs between these ticks (no packet, no other timer), so the counters stand
        still after the first: each Stats takes them at once (:meth:`Stats.estimate_ticks`), and the
        next tick's time is computed, not walked, where the walk's float sums are provably exact.
        """
        heap = self._heap
        before_other = bool(heap) and limit == heap[0][0]  # a tie goes to the timer queued first
        ticks, last = self._ticks_until(first, limit, before_other)
        self.stats.estimate_ticks(ticks)
        for svc in self.services.values():
            svc.stats.estimate_ticks(ticks)
            for dest in svc.dests:
                dest.stats.estimate_ticks(ticks)
        self.call_at(last + ESTIMATOR_PERIOD, self._estimate_tick)

    @staticmethod
    def _ticks_until(first: float, limit: float, before_other: bool) -> tuple[int, float]:
        """How many ticks ``first, first + P, ...`` (each the float sum of the one before and P) are
        due by ``limit`` (before it, if ``before_other``), at least one, and the last one's time.

        Where every sum ``first + i*P`` up to the end is exact in binary floating point (``first``'s
        fraction fits the ulp there), the sums are the products and the count is closed-form;
        otherwise the times are walked, without the estimator's work.
        """
        step = ESTIMATOR_PERIOD

        def due(t: float) -> bool:
            return t < limit if before_other else t <= limit

        span = max(limit - first, 0.0)
        k = int(span // step)  # candidate number of further ticks
        end = first + k * step
        _, denominator = first.as_integer_ratio()
        if first >= 0 and math.isfinite(end) and math.ulp(end + step) * denominator <= 1:
            while k > 0 and not due(first + k * step):
                k -= 1
            while due(first + (k + 1) * step):
                k += 1
            return k + 1, first + k * step
        ticks, t = 1, first
        while due(t + step) and t + step > t:
            t += step
            ticks += 1
        return ticks, t

    # -- connection lifecycle ----------------------------------------------------------------------

    def _expire(self, cp: Conn, now: float) -> None:
        """ip_vs_conn_expire(): free the entry, unless it still controls others."""
        if cp.n_control:
            cp.timeout = EXPIRE_LATER  # permanently: later reuse extends by 60 s only
            self._arm(cp, now + EXPIRE_LATER)
            return
        cp.dead = True
        if cp.flags & F_TEMPLATE:
            if self.templates.get(cp.key) is cp:
                del self.templates[cp.key]
            self.invalid_templates.discard(cp)
        elif self.conns.get(cp.key) is cp:
            del self.conns[cp.key]
        if cp.control is not None:
            cp.control.n_control -= 1
            cp.control = None
        cp.dest.unbind(cp.template, bool(cp.flags & F_INACTIVE))

    def _expire_now(self, cp: Conn) -> None:
        """ip_vs_conn_expire_now(): the timer fires at the next tick, after this packet."""
        cp.expires = self.now()
        cp.heap_at = cp.expires
        self._seq += 1
        heapq.heappush(self._heap, (cp.expires, self._seq, cp))

    def _new_conn(self, key: ConnKey, protocol: int, caddr: IPAddress, cport: int,
                  vaddr: object, vport: int, dest: Dest, dport: int, flags: int) -> Conn:
        """ip_vs_conn_new() + ip_vs_bind_dest(): every new connection starts inactive."""
        flags |= dest.forward.kernel_code | F_INACTIVE
        if dest.no_output:
            flags |= F_NOOUTPUT
        cp = Conn(key, protocol, caddr, cport, vaddr, vport, dest, dport, flags)
        dest.bind(bool(flags & F_TEMPLATE))
        return cp

    def _set_state(self, cp: Conn, outbound: bool, flags: int) -> None:
        """ip_vs_set_state(): the protocol's transition, counters and the new timeout."""
        if cp.protocol == TCP:
            if cp.flags & F_NOOUTPUT:
                if outbound:
                    cp.flags &= ~F_NOOUTPUT
                    table = tcp.NEXT_OUTPUT
                else:
                    table = tcp.NEXT_INPUT_ONLY
            else:
                table = tcp.NEXT_OUTPUT if outbound else tcp.NEXT_INPUT
            new = table[flags & 0x1F][cp.state]
            if new != cp.state:
                dest = cp.dest
                active = tcp.IS_ACTIVE[new]
                if not cp.flags & F_INACTIVE and not active:
                    dest.activeconns -= 1
                    dest.inactconns += 1
                    cp.flags |= F_INACTIVE
                elif cp.flags & F_INACTIVE and active:
                    dest.activeconns += 1
                    dest.inactconns -= 1
                    cp.flags &= ~F_INACTIVE
                if new == tcp.ESTABLISHED:
                    self._assure(cp)
                cp.state = new
            cp.timeout = self.timeouts[new]
        else:  # UDP: one state; a reply assures the template
            if outbound:
                self._assure(cp)
            cp.timeout = self.udp_timeout

    @staticmethod
    def _assure(cp: Conn) -> None:
        ct = cp.control
        if ct is not None and ct.flags & F_TEMPLATE:
            ct.state = 1  # IP_VS_CTPL_S_ASSURED

    # -- packets -------------------------------------------------------------------------------------

    def packet_in(self, protocol: int, saddr: IPAddress, sport: int, daddr: IPAddress, dport: int,
                  flags: int = 0, size: int = 0, mark: int = 0) -> Conn | None:
        """ip_vs_in(): a client packet to a VIP. Returns its connection, or None if IPVS did not
        forward it (dropped, refused, or left to the local stack)."""
        now = self.now()
        if self._heap[0][0] <= now:
            self.run_timers(now)
        key = conn_key(protocol, saddr, sport, daddr, dport)
        cp = self.conns.get(key)
        if cp is not None:
            sysctls = self.sysctls
            # A SYN on an old entry: reschedule one to a quiesced dest (expire_nodest_conn), or
            # one the kernel expects a new connection on (conn_reuse_mode).
            if protocol == TCP and flags & tcp.SYN and (
                (sysctls.expire_nodest_conn and cp.dest.weight == 0)
                or (sysctls.conn_reuse_mode and self._new_conn_expected(cp))
            ):
                if not cp.n_control:
                    self._expire_now(cp)
                cp = None
            if cp is not None and not cp.dest.flags & AVAILABLE:
                # The real server was deleted: drop, and leave the timer alone.
                if not sysctls.expire_nodest_conn:
                    return None
                self._expire_now(cp)
                cp = None
        if cp is None:
            if protocol == TCP and (flags & tcp.RST or not (flags & tcp.SYN or self.sysctls.sloppy_tcp)):
                return None
            svc = self.find_service(protocol, daddr, dport, mark)
            if svc is None:
                return None
            cp = self._schedule(svc, key, saddr, sport, daddr, dport, now)
            if cp is None:
                return None  # ip_vs_leave(): ICMP port unreachable
        dest = cp.dest
        live = dest.stats.live
        live[1] += 1
        live[3] += size
        live = dest.service.stats.live
        live[1] += 1
        live[3] += size
        live = self.stats.live
        live[1] += 1
        live[3] += size
        self._set_state(cp, False, flags)
        if cp.flags & F_ONE_PACKET:
            self._expire(cp, now)  # never hashed: freed after its one packet
        else:
            self._arm(cp, now + cp.timeout)
        return cp

    def packet_out(self, cp: Conn, flags: int = 0, size: int = 0) -> bool:
        """ip_vs_out(): a real server's reply through the director (NAT only). False if the
        connection is gone."""
        now = self.now()
        if self._heap[0][0] <= now:
            self.run_timers(now)
        if cp.dead:
            return False
        dest = cp.dest
        if dest.flags & AVAILABLE:
            for stats in (dest.stats.live, dest.service.stats.live, self.stats.live):
                stats[2] += 1
                stats[4] += size
        self._set_state(cp, True, flags)
        self._arm(cp, now + cp.timeout)
        return True

    def _new_conn_expected(self, cp: Conn) -> bool:
        """is_new_conn_expected(): may a SYN on this old entry start a new connection?"""
        if cp.control is not None:
            return False
        return cp.state in (tcp.TIME_WAIT, tcp.CLOSE) or bool(
            self.sysctls.conn_reuse_mode & 2 and cp.state == tcp.FIN_WAIT
            and cp.flags & F_NOOUTPUT
        )

    def find_service(self, protocol: int, vaddr: IPAddress, vport: int, mark: int = 0) -> SimService | None:
        """ip_vs_service_find(): fwmark first, then the exact service, FTP, then port zero."""
        if mark:
            svc = self._by_mark.get((vaddr.version, mark))
            if svc is not None:
                return svc
        vkey = addr_key(vaddr)
        svc = self._by_addr.get((protocol, vkey, vport))
        if svc is None and protocol == TCP and self._ftp_services and (vport == FTPDATA or vport >= 1024):
            svc = self._by_addr.get((protocol, vkey, FTPPORT))
        if svc is None and self._null_services:
            svc = self._by_addr.get((protocol, vkey, 0))
        return svc

    def _schedule(self, svc: SimService, key: ConnKey, saddr: IPAddress, sport: int,
                  daddr: IPAddress, dport: int, now: float) -> Conn | None:
        """ip_vs_schedule(): pick a dest and create the connection."""
        protocol = key & 0xFF
        if sport == FTPDATA:
            return None  # never schedule active FTP data connections
        if svc.persistent:
            return self._schedule_persistent(svc, key, saddr, sport, daddr, dport, now)
        if not svc.fwmark and dport != svc.port:
            return None
        dest = self._pick(svc, protocol, saddr, sport, daddr, dport, now)
        if dest is None:
            return None
        flags = F_ONE_PACKET if svc.flags & SVC_ONEPACKET and protocol == UDP else 0
        cp = self._new_conn(key, protocol, saddr, sport, daddr, dport, dest, dest.port or dport, flags)
        if not flags:
            self.conns[cp.key] = cp
        self._count_conn(dest)
        return cp

    def predict(self, protocol: int, saddr: IPAddress, sport: int, daddr: IPAddress, dport: int,
                mark: int = 0) -> Dest | None:
        """The dest a new connection from ``saddr:sport`` would reach now, changing nothing.

        The 4-tuple must be free (no entry holds it): the question is about a new connection.
        """
        now = self.now()
        self.run_timers(now)
        svc = self.find_service(protocol, daddr, dport, mark)
        if svc is None or sport == FTPDATA:
            return None
        if svc.persistent:
            ct = self.templates.get(self.template_key(svc, protocol, saddr, daddr, dport))
            if ct is not None and self._template_usable(ct):
                return ct.dest
        elif not svc.fwmark and dport != svc.port:
            return None
        if svc.scheduler is None:
            return None
        return svc.scheduler.peek(Packet(protocol, saddr, sport, daddr, dport, now))

    def _pick(self, svc: SimService, protocol: int, saddr: IPAddress, sport: int,
              daddr: IPAddress, dport: int, now: float) -> Dest | None:
        if svc.scheduler is None:
            return None
        return svc.scheduler.schedule(Packet(protocol, saddr, sport, daddr, dport, now))

    def _count_conn(self, dest: Dest) -> None:
        """ip_vs_conn_stats(): one more connection for the dest, its service and the total."""
        dest.stats.live[0] += 1
        dest.service.stats.live[0] += 1
        self.stats.live[0] += 1

    @staticmethod
    def template_key(svc: SimService, protocol: int, saddr: IPAddress, daddr: IPAddress, vport: int) -> ConnKey:
        """The template's identity: (protocol, client network, 0, vaddr or fwmark, vport), packed."""
        caddr, vaddr = addr_key(saddr), addr_key(daddr)
        if svc.family == 4:
            snet = caddr & svc.netmask
        else:
            host_bits = 128 - svc.netmask
            snet = (((caddr & ~V6) >> host_bits) << host_bits) | V6
        if vport != svc.port:
            vport = 0  # a fwmark or port-zero service: one template for every port
            if svc.fwmark:
                protocol, vaddr = 0, svc.fwmark  # IPPROTO_IP: shared by tcp and udp of the mark
        elif svc.port == FTPPORT:
            vport = 0
        return ((((snet << 16) << 129 | vaddr) << 16 | vport) << 8) | protocol

    def _template_usable(self, ct: Conn) -> bool:
        """Its dest exists and, under expire_quiescent_template, is not quiesced."""
        dest = ct.dest
        return bool(dest.flags & AVAILABLE) and not (self.sysctls.expire_quiescent_template and dest.weight == 0)

    def _template_valid(self, ct: Conn) -> bool:
        """ip_vs_check_template(): invalidate (re-key to port 65535) a template whose dest is gone."""
        if self._template_usable(ct):
            return True
        if ct.vport != INVALID_PORT:
            del self.templates[ct.key]
            ct.vport = ct.dport = INVALID_PORT  # no lookup matches it any more
            ct.cport = 0
            self.invalid_templates.add(ct)
        return False  # its timer is not refreshed

    def _schedule_persistent(self, svc: SimService, key: ConnKey, saddr: IPAddress, sport: int,
                             daddr: IPAddress, dport: int, now: float) -> Conn | None:
        """ip_vs_sched_persist(): reuse the client's template, or schedule and create one."""
        protocol = key & 0xFF
        tkey = self.template_key(svc, protocol, saddr, daddr, dport)
        ct = self.templates.get(tkey)
        if ct is None or not self._template_valid(ct):
            dest = self._pick(svc, protocol, saddr, sport, daddr, dport, now)
            if dest is None:
                return None
            tport = dest.port if dport == svc.port and svc.port != FTPPORT else 0
            tproto, snet, _, _, tvport = unpack_key(tkey)
            vaddr: object = svc.fwmark if tproto == 0 else daddr
            ct = self._new_conn(tkey, tproto, address_of(snet), 0, vaddr, tvport, dest, tport, F_TEMPLATE)
            ct.timeout = float(svc.timeout)
            self.templates[tkey] = ct
        else:
            dest = ct.dest
        port = dest.port if dport == svc.port and dest.port else dport
        flags = F_ONE_PACKET if svc.flags & SVC_ONEPACKET and protocol == UDP else 0
        cp = self._new_conn(key, protocol, saddr, sport, daddr, dport, dest, port, flags)
        if not flags:
            self.conns[cp.key] = cp
        cp.control = ct  # ip_vs_control_add()
        ct.n_control += 1
        self._arm(ct, now + ct.timeout)  # the template timer restarts only here
        self._count_conn(dest)
        return cp

    # -- control plane -------------------------------------------------------------------------------

    def add_service(self, config: VirtualService) -> None:
        """ip_vs_add_service()."""
        svc = SimService(config)
        svc.scheduler = scheduler_class(config.scheduler)(svc, self)
        self.services[config.key] = svc
        self._index(svc, +1)

    def _index(self, svc: SimService, delta: int) -> None:
        config = svc.config
        if config.fwmark:
            key_m = (config.family, config.fwmark)
            if delta > 0:
                self._by_mark[key_m] = svc
            else:
                del self._by_mark[key_m]
            return
        assert config.protocol is not None and config.address is not None
        key_a = (config.protocol.number, addr_key(config.address), config.port)
        if delta > 0:
            self._by_addr[key_a] = svc
        else:
            del self._by_addr[key_a]
        if config.port == FTPPORT and config.protocol is Protocol.TCP:
            self._ftp_services += delta
        if config.port == 0:
            self._null_services += delta

    def edit_service(self, config: VirtualService) -> None:
        """ip_vs_edit_service(): the same scheduler keeps its state; another one starts afresh."""
        svc = self.services[config.key]
        old = svc.config.scheduler
        svc.configure(config)
        if config.scheduler is not old:
            assert svc.scheduler is not None
            svc.scheduler.done()
            svc.scheduler = scheduler_class(config.scheduler)(svc, self)

    def delete_service(self, key: ServiceKey) -> None:
        """__ip_vs_del_service(): unbind the scheduler, then every dest goes to the trash."""
        svc = self.services.pop(key)
        self._index(svc, -1)
        if svc.scheduler is not None:
            svc.scheduler.done()
        for dest in list(svc.dests):
            svc.dests.remove(dest)
            self._trash(dest)
        self._queue_nodest_flush()

    def add_real_server(self, key: ServiceKey, rs: RealServer) -> None:
        """ip_vs_add_dest(): revive a matching dest from the trash, or make a new one; it goes to
        the head of the list."""
        svc = self.services[key]
        dest = self._from_trash(svc, rs)
        if dest is None:
            dest = Dest(rs, svc)
        elif dest.service is not svc:
            dest.stats = Stats()  # stats survive only a re-add to the same service object
            dest.service = svc
        dest.update(rs, add=True)
        svc.dests.insert(0, dest)
        if svc.scheduler is not None:
            svc.scheduler.add_dest(dest)

    def edit_real_server(self, key: ServiceKey, rs: RealServer) -> None:
        """ip_vs_edit_dest(): the dest keeps its place; upd_dest runs even if nothing changed."""
        svc = self.services[key]
        dest = svc.find(rs.address, rs.port)
        assert dest is not None
        dest.update(rs, add=False)
        if svc.scheduler is not None:
            svc.scheduler.upd_dest(dest)

    def delete_real_server(self, key: ServiceKey, address: IPAddress, port: int) -> None:
        """ip_vs_del_dest(): unlink, tell the scheduler, move to the trash."""
        svc = self.services[key]
        dest = svc.find(address, port)
        assert dest is not None
        index = svc.dests.index(dest)
        dest.flags &= ~AVAILABLE
        del svc.dests[index]
        if svc.scheduler is not None:
            svc.scheduler.del_dest(dest, index)
        self._trash(dest)
        self._queue_nodest_flush()

    def _queue_nodest_flush(self) -> None:
        if self.sysctls.expire_nodest_conn:
            # The sweep is queued work for the next tick (one jiffy), not run in the delete.
            self.call_at(self.now() + 1 / self.profile.hz, self._expire_nodest_conns)

    def _trash(self, dest: Dest) -> None:
        dest.flags &= ~AVAILABLE
        if not self.trash:
            self._arm_trash_timer(self.now())
        dest.idle_start = 0.0
        self.trash.insert(0, dest)

    def _arm_trash_timer(self, now: float) -> None:
        # One timer: mod_timer() moves it, so an earlier pending firing is void.
        self._trash_due = now + TRASH_PERIOD / 2
        self.call_at(self._trash_due, self._trash_expire)

    def _from_trash(self, svc: SimService, rs: RealServer) -> Dest | None:
        """ip_vs_trash_get_dest(): same address and port, and a dest of this same service."""
        for dest in self.trash:
            if dest.address == rs.address and dest.port == rs.port and dest.service.config.key == svc.config.key:
                self.trash.remove(dest)
                return dest
        return None

    def _trash_expire(self, now: float) -> None:
        """ip_vs_dest_trash_expire(): free a dest unreferenced for a whole period."""
        if now != self._trash_due:
            return  # the timer was moved since this firing was queued
        for dest in list(self.trash):
            if dest.refs():
                continue
            if not dest.idle_start:
                dest.idle_start = max(now, 1 / self.profile.hz)  # 0 means not idle yet
                continue
            if now < dest.idle_start + TRASH_PERIOD:
                continue
            self.trash.remove(dest)
        if self.trash:
            self._arm_trash_timer(now)

    def _expire_nodest_conns(self, now: float) -> None:
        """ip_vs_expire_nodest_conn_flush(): expire what points to a deleted dest, templates too."""
        for cp in list(self.entries()):
            if cp.dead or cp.dest.flags & AVAILABLE or cp.n_control:
                continue
            ct = cp.control
            self._expire(cp, now)
            if ct is not None and not ct.n_control and not ct.dead:
                self._expire(ct, now)

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """ip_vs_set_timeout(): only ESTABLISHED, FIN_WAIT and UDP change."""
        self.timeouts[tcp.ESTABLISHED] = float(timeouts.tcp)
        self.timeouts[tcp.FIN_WAIT] = float(timeouts.tcpfin)
        self.udp_timeout = float(timeouts.udp)

    def get_timeouts(self) -> Timeouts:
        return Timeouts(int(self.timeouts[tcp.ESTABLISHED]), int(self.timeouts[tcp.FIN_WAIT]),
                        int(self.udp_timeout))

    def entry_tables(self) -> tuple[object, ...]:
        """The containers that hold connection entries and their timers (an undo copies them shallowly)."""
        return (self.conns, self.templates, self.invalid_templates, self._heap)

    def service_tables(self) -> tuple[object, ...]:
        """The containers that index the services (an undo copies them shallowly)."""
        return (self.services, self._by_addr, self._by_mark)

    def entries(self) -> Iterator[Conn]:
        """Every live connection and template (the order of /proc/net/ip_vs_conn is the hash's)."""
        yield from self.conns.values()
        yield from self.templates.values()
        yield from self.invalid_templates

    def zero(self, key: ServiceKey | None = None) -> None:
        """ipvsadm -Z: zero one service and its dests, or everything."""
        services = [self.services[key]] if key is not None else list(self.services.values())
        if key is None:
            self.stats.reset()
        for svc in services:
            svc.stats.reset()
            for dest in svc.dests:
                dest.stats.reset()
