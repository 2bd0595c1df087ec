"""ipvsadm's language: command lines to ops, and the ``ipvsadm-save -n`` format both ways.

Commands are read with ipvsadm 1.31's defaults and quirks, so a rules file means here what it
means to ipvsadm: ``-A``/``-E`` default to wlc, ``-a``/``-e`` to DR with weight 1 (an edit sends
every field, so a forgotten ``-m`` switches a real server to DR), ``-p`` alone is 360 s, ``-E``
without ``-p`` drops persistence, and a DR or tunnel real server takes the virtual port.

.. versionchanged:: 0.3 moved from ``lbcore.ipvsadm``.
"""

from __future__ import annotations

import functools
import ipaddress
import shlex
import typing
from collections.abc import Iterable, Sequence

from lbcore._ints import i32
from lbcore.enums import ForwardMethod, Protocol, Scheduler, SchedulerFlag, TunnelChecksum, TunnelType
from lbcore.errors import InvalidField, ParseError
from lbcore.model import (
    DEFAULT_PERSISTENCE_TIMEOUT,
    IPAddress,
    Persistence,
    RealServer,
    ServiceKey,
    Timeouts,
    Tunnel,
    VirtualService,
    format_endpoint,
)
from lbcore.ops import (
    AddRealServer,
    AddService,
    DeleteRealServer,
    DeleteService,
    EditRealServer,
    EditService,
    Op,
    SetTimeouts,
    apply_ops,
)
from lbcore.table import Table

_COMMANDS = {
    "-A": "add-service", "--add-service": "add-service",
    "-E": "edit-service", "--edit-service": "edit-service",
    "-D": "delete-service", "--delete-service": "delete-service",
    "-C": "clear", "--clear": "clear",
    "-a": "add-server", "--add-server": "add-server",
    "-e": "edit-server", "--edit-server": "edit-server",
    "-d": "delete-server", "--delete-server": "delete-server",
    "--set": "set",
}
_SERVICE_OPTIONS = {
    "-t": Protocol.TCP, "--tcp-service": Protocol.TCP,
    "-u": Protocol.UDP, "--udp-service": Protocol.UDP,
    "--sctp-service": Protocol.SCTP,
}
_FORWARD = {
    "-g": ForwardMethod.DR, "--gatewaying": ForwardMethod.DR,
    "-m": ForwardMethod.NAT, "--masquerading": ForwardMethod.NAT,
    "-i": ForwardMethod.TUNNEL, "--ipip": ForwardMethod.TUNNEL,
}
_WITH_VALUE = {
    "-f": "fwmark", "--fwmark-service": "fwmark", "-s": "scheduler", "--scheduler": "scheduler",
    "-M": "netmask", "--netmask": "netmask", "--pe": "pe", "-b": "flags", "--sched-flags": "flags",
    "-r": "real", "--real-server": "real", "-w": "weight", "--weight": "weight",
    "-x": "u_threshold", "--u-threshold": "u_threshold",
    "-y": "l_threshold", "--l-threshold": "l_threshold",
    "--tun-type": "tun_type", "--tun-port": "tun_port",
}
_FLAGS = {"-6": "ipv6", "--ipv6": "ipv6", "-o": "ops", "--ops": "ops", "-n": "numeric",
          "--numeric": "numeric", "--tun-nocsum": "nocsum", "--tun-csum": "csum",
          "--tun-remcsum": "remcsum"}


def _without_program(words: list[str]) -> list[str]:
    """The words after a leading ``ipvsadm`` (or ``/sbin/ipvsadm``), as a guide's commands have it."""
    if words and words[0].rpartition("/")[2] == "ipvsadm":
        return words[1:]
    return words


class _Line:
    """One command line, split into its command and options."""

    def __init__(self, text: str, where: str) -> None:
        self.where = where
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError as exc:
            raise ParseError(where, "line", text, f"cannot be split: {exc}") from None
        tokens = _without_program(tokens)
        self.command = ""
        self.service: tuple[str, str] | None = None  # (option, value)
        self.values: dict[str, str] = {}
        self.flags: set[str] = set()
        self.forward: ForwardMethod | None = None
        self.persistent: str | None = None
        self.timeouts: list[str] = []
        i = 0
        while i < len(tokens):
            tok = tokens[i]
            if tok in _COMMANDS:
                self._set_command(tok)
                if tok == "--set":
                    self.timeouts = tokens[i + 1 : i + 4]
                    if len(self.timeouts) != 3:
                        raise ParseError(where, tok, " ".join(self.timeouts), "needs tcp tcpfin udp")
                    i += 3
            elif tok in _SERVICE_OPTIONS or tok in ("-f", "--fwmark-service"):
                self.service = (tok, self._value(tokens, i))
                i += 1
            elif tok in ("-p", "--persistent"):
                nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
                if nxt.isdigit():
                    self.persistent = nxt
                    i += 1
                else:
                    self.persistent = str(DEFAULT_PERSISTENCE_TIMEOUT)
            elif tok in _WITH_VALUE:
                self.values[_WITH_VALUE[tok]] = self._value(tokens, i)
                i += 1
            elif tok in _FORWARD:
                self.forward = _FORWARD[tok]
            elif tok in _FLAGS:
                self.flags.add(_FLAGS[tok])
            else:
                raise ParseError(where, "option", tok, "is not an ipvsadm option lbcore knows")
            i += 1
        if not self.command:
            raise ParseError(where, "command", text.strip(), "has no command (-A -E -D -C -a -e -d --set)")

    def _set_command(self, tok: str) -> None:
        if self.command:
            raise ParseError(self.where, "command", tok, f"is a second command after {self.command}")
        self.command = _COMMANDS[tok]

    def _value(self, tokens: list[str], i: int) -> str:
        if i + 1 >= len(tokens):
            raise ParseError(self.where, tokens[i], None, "needs a value")
        return tokens[i + 1]

    def number(self, name: str, default: int, lo: int, hi: int) -> int:
        text = self.values.get(name)
        if text is None:
            return default
        if not text.isdigit() or not lo <= int(text) <= hi:
            raise ParseError(self.where, name, text, f"is not a number in {lo}..{hi}")
        return int(text)


def _endpoint(where: str, field: str, text: str, default_port: int | None) -> tuple[IPAddress, int]:
    """``a.b.c.d[:port]`` or ``[v6][:port]``; a missing port is ``default_port``."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ParseError(where, field, text, "is not an address (names are not resolved: use -n form)") from None
    if not port:
        if default_port is None:
            raise ParseError(where, field, text, "has no port")
        return address, default_port
    if not port.isdigit() or int(port) > 65535:
        raise ParseError(where, field, text, "has no valid port (0..65535)")
    return address, int(port)


def _service_key(line: _Line) -> ServiceKey:
    return _service(line, settings=False).key


def _service(line: _Line, settings: bool) -> VirtualService:
    if line.service is None:
        raise ParseError(line.where, "service", None, "is missing (-t, -u, --sctp-service or -f)")
    option, value = line.service
    kwargs: dict[str, object] = {}
    if option in _SERVICE_OPTIONS:
        address, port = _endpoint(line.where, option, value, None)
        kwargs.update(protocol=_SERVICE_OPTIONS[option], address=address, port=port)
    else:
        if not value.isdigit():
            raise ParseError(line.where, option, value, "is not a firewall mark")
        kwargs.update(fwmark=int(value), family=6 if "ipv6" in line.flags else 4)
    if settings:
        scheduler = line.values.get("scheduler", Scheduler.WLC.value)
        kwargs["scheduler"] = scheduler
        if "flags" in line.values:
            kwargs["flags"] = _sched_flags(line, scheduler)
        if line.persistent is not None:
            netmask: object = line.values.get("netmask")
            kwargs["persistence"] = Persistence(
                timeout=int(line.persistent), netmask=netmask, engine=line.values.get("pe")
            )
        kwargs["one_packet"] = "ops" in line.flags
    elif not kwargs.get("port") and "fwmark" not in kwargs:
        # A key only: a port-0 service exists only with persistence, which a key does not carry.
        kwargs["persistence"] = Persistence()
    return VirtualService(**kwargs)  # type: ignore[arg-type]


def _sched_flags(line: _Line, scheduler: str) -> list[str]:
    flags = []
    for name in line.values["flags"].split(","):
        if name.startswith("flag-") and scheduler in ("sh", "mh") and name in ("flag-1", "flag-2"):
            name = f"{scheduler}-{'fallback' if name == 'flag-1' else 'port'}"
        if name not in {f.value for f in SchedulerFlag}:
            raise ParseError(line.where, "-b", name, f"is not a flag of scheduler {scheduler}")
        flags.append(name)
    return flags


def _real_server(line: _Line, key: ServiceKey) -> RealServer:
    if "real" not in line.values:
        raise ParseError(line.where, "-r", None, "is missing")
    address, port = _endpoint(line.where, "-r", line.values["real"], key.port)
    forward = line.forward or ForwardMethod.DR
    if not key.fwmark and forward is not ForwardMethod.NAT:
        port = key.port  # ipvsadm: DR and tunnel real servers take the virtual port
    tunnel = None
    if forward is ForwardMethod.TUNNEL:
        checksum = next((c for c in ("remcsum", "csum", "nocsum") if c in line.flags), "nocsum")
        tunnel = Tunnel(
            type=TunnelType(line.values.get("tun_type", "ipip")),
            port=line.number("tun_port", 0, 0, 65535),
            checksum=TunnelChecksum(checksum),
        )
    return RealServer(
        address=address,
        port=port,
        weight=line.number("weight", 1, 0, 2**31 - 1),
        forward=forward,
        u_threshold=line.number("u_threshold", 0, 0, 2**31 - 1),
        l_threshold=line.number("l_threshold", 0, 0, 2**31 - 1),
        tunnel=tunnel,
    )


def parse_command(text: str, table: Table, where: str = "ipvsadm") -> list[Op]:
    """The ops of one ipvsadm command line, with or without the leading ``ipvsadm``.

    ``table`` is the state the command applies to: ``--set`` keeps a timeout given as 0, and
    ``-C`` deletes the services the table holds.

    Raises:
        ParseError: the line is not an ipvsadm command lbcore knows; names the option and value.
        InvalidField: a value the model refuses (a port of 70000, an unknown scheduler, ...).

    .. versionchanged:: 0.3 a leading ``ipvsadm`` (a command pasted from a guide) is accepted.
    """
    try:
        line = _Line(text, where)
        if line.command == "add-service":
            return [AddService(_service(line, settings=True))]
        if line.command == "edit-service":
            return [EditService(_service(line, settings=True))]
        if line.command == "delete-service":
            return [DeleteService(_service_key(line))]
        if line.command == "clear":
            return [DeleteService(key) for key in table.services]
        if line.command == "set":
            return [SetTimeouts(_timeouts(line, table.timeouts or Timeouts()))]
        key = _service_key(line)
        if line.command == "delete-server":
            address, port = _endpoint(where, "-r", line.values.get("real", ""), key.port)
            return [DeleteRealServer(key, address, port)]
        rs = _real_server(line, key)
        return [AddRealServer(key, rs) if line.command == "add-server" else EditRealServer(key, rs)]
    except ParseError:
        raise
    except InvalidField as exc:
        raise ParseError(where, f"{exc.owner}.{exc.field}", exc.value, exc.reason) from exc


def _timeouts(line: _Line, current: Timeouts) -> Timeouts:
    values = []
    for name, text, old in zip(("tcp", "tcpfin", "udp"), line.timeouts,
                               (current.tcp, current.tcpfin, current.udp)):
        if not text.isdigit():
            raise ParseError(line.where, f"--set {name}", text, "is not a number of seconds")
        values.append(int(text) or old)  # 0 leaves it unchanged
    return Timeouts(*values)


_READS_TABLE = frozenset({"-C", "--clear", "--set"})


def parse_save(text: str) -> Table:
    """Read ``ipvsadm-save -n`` output (or any file of ``-A``/``-a`` lines) into a table.

    Raises:
        ParseError: a malformed line, named by its number.
        ServiceExists, ServiceNotFound, RealServerExists: the lines contradict each other.
    """
    table = Table()
    pending: list[Op] = []
    for number, raw in enumerate(text.splitlines(), 1):
        words = _without_program(raw.split())
        if not words or words[0].startswith("#"):
            continue
        if words[0] in _READS_TABLE:  # the only lines whose ops depend on the table so far
            table, pending = apply_ops(table, pending), []
        pending.extend(parse_command(raw, table, f"ipvsadm line {number}"))
    # One fold at the end: applying line by line would copy the table once per line.
    return apply_ops(table, pending)


# -- ipvsadm-save -n ---------------------------------------------------------------------------------


def _addr_words(address: IPAddress | None) -> list[int]:
    if address is None:
        return [0]
    value = int(address)
    if address.version == 4:
        return [value]
    return [(value >> shift) & 0xFFFFFFFF for shift in (96, 64, 32, 0)]


def _cmp_services(a: VirtualService, b: VirtualService) -> int:
    """libipvs ipvs_cmp_services(): differences as C ints, so they wrap at 2^31."""
    af = {4: 2, 6: 10}
    for x, y in ((a.fwmark or 0, b.fwmark or 0), (af[a.family], af[b.family]),
                 (a.protocol.number if a.protocol else 0, b.protocol.number if b.protocol else 0)):
        r = i32(x - y)
        if r:
            return r
    for x, y in zip(_addr_words(a.address), _addr_words(b.address)):
        r = i32(x - y)
        if r:
            return r
    return a.port - b.port


def _cmp_real_servers(a: tuple[IPAddress, int], b: tuple[IPAddress, int]) -> int:
    """libipvs ipvs_cmp_dests() on (address, port) keys: address (wrapping), then port."""
    for x, y in zip(_addr_words(a[0]), _addr_words(b[0])):
        r = i32(x - y)
        if r:
            return r
    return a[1] - b[1]


class _Keyed(typing.Protocol):
    """A real server, or the simulator's kernel-side dest: anything with an (address, port) key."""

    @property
    def key(self) -> tuple[IPAddress, int]: ...


_R = typing.TypeVar("_R", bound=_Keyed)


def sorted_services(services: Iterable[VirtualService]) -> list[VirtualService]:
    """Services in ipvsadm's listing order (fwmark, family, protocol, address, port)."""
    return sorted(services, key=functools.cmp_to_key(_cmp_services))


def sorted_real_servers(real_servers: Iterable[_R]) -> list[_R]:
    """Real servers (or the simulator's dests) in ipvsadm's listing order (address, then port)."""
    by_key = functools.cmp_to_key(_cmp_real_servers)
    return sorted(real_servers, key=lambda rs: by_key(rs.key))


def service_suffix(svc: VirtualService) -> str:
    """The options after ``-s <sched>`` in ``-A`` lines: -p, -M, --pe, -o, -b."""
    out = ""
    p = svc.persistence
    if p is not None:
        out += f" -p {p.timeout}"
        if p.netmask is not None and str(p.netmask) not in ("255.255.255.255", "128"):
            out += f" -M {p.netmask}"
        if p.engine is not None:
            out += f" --pe {p.engine}"
    if svc.one_packet:
        out += " -o"
    if svc.flags:
        out += " -b " + ",".join(f.value for f in sorted(svc.flags, key=lambda f: f.bit))
    return out


def real_server_options(rs: RealServer) -> str:
    """``-g|-m|-i -w W`` and the tunnel options of an ``-a`` line."""
    out = {ForwardMethod.DR: "-g", ForwardMethod.NAT: "-m", ForwardMethod.TUNNEL: "-i"}[rs.forward]
    out += f" -w {rs.weight}"
    t = rs.tunnel
    if t is not None and t.type is not TunnelType.IPIP:
        out += f" --tun-type {t.type}"
        if t.type is TunnelType.GUE:
            out += f" --tun-port {t.port}"
        out += f" --tun-{t.checksum}"
    return out


def format_command(op: Op) -> str:
    """The ipvsadm command line (without ``ipvsadm``) that carries out ``op``: the inverse of
    :func:`parse_command`, in ``ipvsadm-save -n``'s spelling (``-A -t 192.0.2.10:80 -s wlc -p 300``).

    Real servers carry their thresholds (``-x``/``-y``) when they have them, so nothing is lost.

    Raises:
        InvalidField: ``op`` has no ipvsadm command (a sysctl or a rule of :mod:`lbcore.rules`).

    .. versionadded:: 0.4
    """
    if isinstance(op, (AddService, EditService)):
        svc = op.service
        verb = "-A" if isinstance(op, AddService) else "-E"
        return f"{verb} {svc.key.ipvsadm} -s {svc.scheduler}{service_suffix(svc)}"
    if isinstance(op, DeleteService):
        return f"-D {op.key.ipvsadm}"
    if isinstance(op, (AddRealServer, EditRealServer)):
        rs = op.real_server
        verb = "-a" if isinstance(op, AddRealServer) else "-e"
        line = f"{verb} {op.key.ipvsadm} -r {format_endpoint(rs.address, rs.port)} {real_server_options(rs)}"
        if rs.u_threshold or rs.l_threshold:
            line += f" -x {rs.u_threshold} -y {rs.l_threshold}"
        return line
    if isinstance(op, DeleteRealServer):
        return f"-d {op.key.ipvsadm} -r {format_endpoint(op.address, op.port)}"
    if isinstance(op, SetTimeouts):
        t = op.timeouts
        return f"--set {t.tcp} {t.tcpfin} {t.udp}"
    raise InvalidField("ipvsadm", "op", str(op), "has no ipvsadm command")


def dump_save(table: Table | Sequence[VirtualService], thresholds: bool = False) -> str:
    """``ipvsadm-save -n`` of a table: the same lines, options and order ipvsadm 1.31 prints.

    ipvsadm-save never writes thresholds; ``thresholds=True`` appends ``-x``/``-y`` (which
    ipvsadm-restore accepts) so that nothing is lost.
    """
    services = table.services.values() if isinstance(table, Table) else table
    lines = []
    for svc in sorted_services(services):
        key = svc.key.ipvsadm
        lines.append(f"-A {key} -s {svc.scheduler}{service_suffix(svc)}")
        for rs in sorted_real_servers(svc.real_servers):
            line = f"-a {key} -r {format_endpoint(rs.address, rs.port)} {real_server_options(rs)}"
            if thresholds and (rs.u_threshold or rs.l_threshold):
                line += f" -x {rs.u_threshold} -y {rs.l_threshold}"
            lines.append(line)
    return "".join(f"{line}\n" for line in lines)
