"""ipvsadm's language: command lines to ops, and the ``ipvsadm-save -n`` format both ways.

Commands are read with ipvsadm 1.31's defaults and quirks, so a rules file means here what it
means to ipvsadm: ``-A``/``-E`` default to wlc, ``-a``/``-e`` to DR with weight 1 (an edit sends
every field, so a forgotten ``-m`` switches a real server to DR), ``-p`` alone is 360 s, ``-E``
without ``-p`` drops persistence, and a DR or tunnel real server takes the virtual port.

.. versionchanged:: 0.3 moved from ``lbcore.ipvsadm``.
"""

from __future__ import annotations

import functools
import shlex
import typing
from collections.abc import Iterable, Sequence

from lbcore._fields import address_of, ascii_int
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


def _columns(text: str, tokens: list[str]) -> list[int]:
    """The 1-based column where each token starts (where it can be found as written; a quoted one
    is found by its first unquoted occurrence after the one before, else at that one's end)."""
    columns, at = [], 0
    for tok in tokens:
        found = text.find(tok, at)
        if found >= 0:
            at = found
        columns.append(at + 1)
        at += len(tok) if found >= 0 else 0
    return columns


class _Line:
    """One command line, split into its command and options."""

    def __init__(self, text: str, where: str, line: int | None = None) -> None:
        self.where = where
        self.line = line
        self.text = text
        self.column_of: dict[str, int] = {}  # option (or its value name) -> column of its value
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError as exc:
            raise ParseError(where, "line", text, f"cannot be split: {exc}", line=line, column=1) from None
        columns = _columns(text, tokens)
        if tokens and tokens[0].rpartition("/")[2] == "ipvsadm":
            columns = columns[1:]
        tokens = _without_program(tokens)
        self.columns = columns
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
                        raise self.error(tok, " ".join(self.timeouts), "needs tcp tcpfin udp", i)
                    for n, name in enumerate(("tcp", "tcpfin", "udp")):
                        self.column_of[f"--set {name}"] = columns[i + 1 + n]
                    i += 3
            elif tok in _SERVICE_OPTIONS or tok in ("-f", "--fwmark-service"):
                self.service = (tok, self._value(tokens, i))
                self.column_of[tok] = columns[i + 1]
                i += 1
            elif tok in ("-p", "--persistent"):
                nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
                # ipvsadm's optional argument: a value is taken when it does not start with '-'.
                if nxt and not nxt.startswith("-"):
                    if ascii_int(nxt) is None:
                        raise self.error(tok, nxt, "is not a number of seconds (ASCII digits)", i + 1)
                    self.persistent = nxt
                    self.column_of["persistent"] = columns[i + 1]
                    i += 1
                else:
                    self.persistent = str(DEFAULT_PERSISTENCE_TIMEOUT)
            elif tok in _WITH_VALUE:
                self.values[_WITH_VALUE[tok]] = self._value(tokens, i)
                self.column_of[_WITH_VALUE[tok]] = columns[i + 1]
                i += 1
            elif tok in _FORWARD:
                self.forward = _FORWARD[tok]
            elif tok in _FLAGS:
                self.flags.add(_FLAGS[tok])
            else:
                raise self.error("option", tok, "is not an ipvsadm option lbcore knows", i)
            i += 1
        if not self.command:
            raise ParseError(where, "command", text.strip(), "has no command (-A -E -D -C -a -e -d --set)",
                             line=line, column=1)

    def error(self, field: str, value: object, reason: str, token: int | None = None,
              column: int | None = None) -> ParseError:
        """A ParseError at token number ``token`` (or at ``column``, or at the option ``field``'s value)."""
        if column is None:
            column = (self.columns[token] if token is not None and token < len(self.columns)
                      else self.column_of.get(field, 1))
        return ParseError(self.where, field, value, reason, line=self.line, column=column)

    def _set_command(self, tok: str) -> None:
        if self.command:
            raise self.error("command", tok, f"is a second command after {self.command}")
        self.command = _COMMANDS[tok]

    def _value(self, tokens: list[str], i: int) -> str:
        if i + 1 >= len(tokens):
            raise self.error(tokens[i], None, "needs a value", column=len(self.text) + 1)
        return tokens[i + 1]

    def number(self, name: str, default: int, lo: int, hi: int) -> int:
        text = self.values.get(name)
        if text is None:
            return default
        value = ascii_int(text)
        if value is None or not lo <= value <= hi:
            raise self.error(name, text, f"is not a number in {lo}..{hi}")
        return value


def _endpoint(line: _Line, field: str, text: str, default_port: int | None,
              value_of: str | None = None) -> tuple[IPAddress, int]:
    """``a.b.c.d[:port]`` or ``[v6][:port]``; a missing port is ``default_port``."""
    host, port = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, port = text.split(":")
    column = line.column_of.get(value_of or field, 1)
    address = address_of(host)
    if address is None:
        reason = ("has a scope id: no backend carries one yet" if "%" in host
                  else "is not an address (names are not resolved: use -n form)")
        raise line.error(field, text, reason, column=column)
    if not port:
        if default_port is None:
            raise line.error(field, text, "has no port", column=column)
        return address, default_port
    number = ascii_int(port)
    if number is None or number > 65535:
        raise line.error(field, text, "has no valid port (0..65535)", column=column)
    return address, number


def _service_key(line: _Line) -> ServiceKey:
    return _service(line, settings=False).key


def _service(line: _Line, settings: bool) -> VirtualService:
    if line.service is None:
        raise ParseError(line.where, "service", None, "is missing (-t, -u, --sctp-service or -f)")
    option, value = line.service
    kwargs: dict[str, object] = {}
    if option in _SERVICE_OPTIONS:
        address, port = _endpoint(line, option, value, None)
        kwargs.update(protocol=_SERVICE_OPTIONS[option], address=address, port=port)
    else:
        fwmark = ascii_int(value)
        if fwmark is None:
            raise line.error(option, value, "is not a firewall mark (ASCII digits)")
        kwargs.update(fwmark=fwmark, family=6 if "ipv6" in line.flags else 4)
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
            raise line.error("-b", name, f"is not a flag of scheduler {scheduler}", column=line.column_of.get("flags"))
        flags.append(name)
    return flags


def _real_server(line: _Line, key: ServiceKey) -> RealServer:
    if "real" not in line.values:
        raise line.error("-r", None, "is missing")
    address, port = _endpoint(line, "-r", line.values["real"], key.port, "real")
    forward = line.forward or ForwardMethod.DR
    if not key.fwmark and forward is not ForwardMethod.NAT:
        port = key.port  # ipvsadm: DR and tunnel real servers take the virtual port
    tunnel = None
    if forward is ForwardMethod.TUNNEL:
        checksum = next((c for c in ("remcsum", "csum", "nocsum") if c in line.flags), "nocsum")
        tun_type = line.values.get("tun_type", "ipip")
        if tun_type not in {t.value for t in TunnelType}:
            raise line.error("--tun-type", tun_type, f"is not a tunnel type ({', '.join(t.value for t in TunnelType)})",
                             column=line.column_of.get("tun_type"))
        tunnel = Tunnel(
            type=TunnelType(tun_type),
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


def parse_command(text: str, table: Table, where: str = "ipvsadm", line: int | None = None) -> list[Op]:
    """The ops of one ipvsadm command line, with or without the leading ``ipvsadm``.

    ``table`` is the state the command applies to: ``--set`` keeps a timeout given as 0, and
    ``-C`` deletes the services the table holds.

    Raises:
        ParseError: the line is not an ipvsadm command lbcore knows; names the option and value.
        InvalidField: a value the model refuses (a port of 70000, an unknown scheduler, ...).

    The ParseError's ``line`` is the given ``line``; its ``column`` points at the refused value.

    .. versionchanged:: 0.3 a leading ``ipvsadm`` (a command pasted from a guide) is accepted.
    .. versionchanged:: 0.4 ``line``; ASCII digits only.
    """
    if not isinstance(text, str):
        raise ParseError(where, "line", text, "is not a str", line=line)
    parsed: _Line | None = None
    try:
        parsed = _Line(text, where, line)
        return _ops(parsed, table)
    except ParseError:
        raise
    except InvalidField as exc:
        # The model's field, found in the line by its option's value where one was given.
        column = 1
        if parsed is not None:
            column = next((c for name, c in parsed.column_of.items() if name.replace("-", "_").endswith(exc.field)),
                          parsed.column_of.get("-r", 1) if exc.owner in ("RealServer", "Tunnel") else 1)
        raise ParseError(where, f"{exc.owner}.{exc.field}", exc.value, exc.reason, line=line,
                         column=column) from exc


def _ops(line: _Line, table: Table) -> list[Op]:
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
        address, port = _endpoint(line, "-r", line.values.get("real", ""), key.port, "real")
        return [DeleteRealServer(key, address, port)]
    rs = _real_server(line, key)
    return [AddRealServer(key, rs) if line.command == "add-server" else EditRealServer(key, rs)]


def _timeouts(line: _Line, current: Timeouts) -> Timeouts:
    values = []
    for name, text, old in zip(("tcp", "tcpfin", "udp"), line.timeouts,
                               (current.tcp, current.tcpfin, current.udp)):
        seconds = ascii_int(text)
        if seconds is None:
            raise line.error(f"--set {name}", text, "is not a number of seconds (ASCII digits)")
        values.append(seconds or old)  # 0 leaves it unchanged
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
        pending.extend(parse_command(raw, table, f"ipvsadm line {number}", number))
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
