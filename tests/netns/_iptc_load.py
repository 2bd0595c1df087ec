"""Run inside a throw-away network namespace: load entries through libiptc, send one datagram, read back.

stdin: {"tables": {table: {chain: [hex entry, ...]}}, "probe_port": port, "probes": n}. Chains
that are not built in are created first, so that jumps between them resolve. After the commit, n
UDP datagrams "datagram-<i>" (10 bytes each) go to 127.0.0.1:probe_port over lo.
stdout: {"received": [payload, ...], "tables": {table: {chain: [{"comment", "comments",
"counters", "target", "libiptc_target"}, ...]}}}.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import socket
import sys
from typing import Any

import iptc
from lbcore_iptables import _entries


def main() -> None:
    """Load, commit, send the datagrams, read back; print the result as JSON."""
    request = json.load(sys.stdin)
    for name, chains in request["tables"].items():
        table = iptc.Table(name, autocommit=False)
        for chain in chains:
            if not table.builtin_chain(chain):
                table.create_chain(chain)
        for chain, entries in chains.items():
            for raw in map(bytes.fromhex, entries):
                table.append_entry(chain, ctypes.create_string_buffer(raw, len(raw)))
        table.commit()

    received = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        server.bind(("127.0.0.1", request["probe_port"]))
        for index in range(request["probes"]):
            with contextlib.suppress(PermissionError):  # EPERM: OUTPUT dropped it
                client.sendto(f"datagram-{index}".encode(), ("127.0.0.1", request["probe_port"]))
        server.settimeout(0.5)
        with contextlib.suppress(TimeoutError):
            while True:
                received.append(server.recv(64).decode())

    result: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for name, chains in request["tables"].items():
        table = iptc.Table(name, autocommit=False)
        table.refresh()  # a new snapshot, with the counters the datagram moved
        result[name] = {}
        for chain in chains:
            rules = result[name][chain] = []
            entry = table.first_rule(chain)
            while entry:
                raw = _entries.raw_entry(entry)
                jump = table.get_target(entry)
                rules.append({"comment": _entries.comment_of(raw), "comments": _entries.comments_of(raw),
                              "counters": _entries.counters_of(raw),
                              "target": _entries.target_name_of(raw),
                              "libiptc_target": jump.decode() if jump else None})
                entry = table.next_rule(entry)
    json.dump({"received": received, "tables": result}, sys.stdout)


if __name__ == "__main__":
    main()
