"""A real TCP connection crosses an IPVS NAT service between network namespaces.

Topology, all inside the user-mode Linux kernel (it has no link to the outside)::

    client netns               director (the kernel's root netns)                real server netns
    10.0.1.2 --veth-- 10.0.1.1    VIP 10.0.0.98/32 on vip0 (dummy)     10.0.2.1 --veth-- 10.0.2.2:8080

The client's and the real server's default routes point at the director, so the server's replies
come back through it and IPVS rewrites them (NAT, ``-m``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel

VIP, PORT = "10.0.0.98", 80  # not 10.0.0.99 and up: other kernel tests use those
CLIENT, DIRECTOR_CLIENT_SIDE = "10.0.1.2", "10.0.1.1"
REAL_SERVER, DIRECTOR_SERVER_SIDE, REAL_PORT = "10.0.2.2", "10.0.2.1", 8080

# Accept one connection, say who we are, wait for the client to close.
SERVER = f"""
import socket, sys
listener = socket.create_server(("{REAL_SERVER}", {REAL_PORT}))
print("listening", flush=True)
listener.settimeout(20)
connection, peer = listener.accept()
connection.sendall(b"real server {REAL_SERVER}, client " + peer[0].encode() + b"\\n")
connection.settimeout(20)
connection.recv(1)
"""

# Connect to the VIP, print the reply, keep the connection open until told on stdin.
CLIENT_CODE = f"""
import socket, sys
connection = socket.create_connection(("{VIP}", {PORT}), timeout=5)
print(connection.makefile().readline().strip(), flush=True)
sys.stdin.readline()
connection.close()
"""


def _link(run, netns: str, inside: str, outside: str, address: str, gateway: str) -> None:
    """A veth pair: ``inside`` in ``netns`` with ``address``/24, ``outside`` on the director."""
    run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside, "netns", netns)
    run("ip", "addr", "add", f"{gateway}/24", "dev", outside)
    run("ip", "link", "set", outside, "up")
    run("ip", "-n", netns, "addr", "add", f"{address}/24", "dev", inside)
    run("ip", "-n", netns, "link", "set", inside, "up")
    run("ip", "-n", netns, "route", "add", "default", "via", gateway)


@pytest.fixture
def vip(run):
    """The VIP on a dummy link of the director, removed afterwards."""
    run("ip", "link", "add", "vip0", "type", "dummy")
    run("ip", "addr", "add", f"{VIP}/32", "dev", "vip0")
    run("ip", "link", "set", "vip0", "up")
    yield VIP
    run("ip", "link", "del", "vip0")


@pytest.fixture
def forwarding():
    """IPv4 forwarding on the director (NAT: the real server's replies cross it); restored after."""
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path, encoding="ascii") as file:
        before = file.read()
    with open(path, "w", encoding="ascii") as file:
        file.write("1")
    yield
    with open(path, "w", encoding="ascii") as file:
        file.write(before)


def test_tcp_connection_through_ipvs_nat_reaches_the_real_server(run, ipvsadm, netns, vip, forwarding):
    _link(run, netns("client"), "eth0", "veth-client", CLIENT, DIRECTOR_CLIENT_SIDE)
    _link(run, netns("real1"), "eth0", "veth-real1", REAL_SERVER, DIRECTOR_SERVER_SIDE)
    ipvsadm("-A", "-t", f"{vip}:{PORT}", "-s", "rr")
    ipvsadm("-a", "-t", f"{vip}:{PORT}", "-r", f"{REAL_SERVER}:{REAL_PORT}", "-m")

    server = subprocess.Popen(
        ["ip", "netns", "exec", "real1", sys.executable, "-I", "-c", SERVER],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    client = None
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(
            ["ip", "netns", "exec", "client", sys.executable, "-I", "-c", CLIENT_CODE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert client.stdout is not None and client.stdin is not None
        reply = client.stdout.readline().strip()
        connections = ipvsadm("-Lnc")
        client.stdin.write("close\n")
        client.stdin.flush()
        assert client.wait(timeout=20) == 0, client.stdout.read()
        assert server.wait(timeout=20) == 0, server.stdout.read()
    finally:
        for process in (client, server):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()

    # The real server saw the client's own address: NAT rewrites the destination only.
    assert reply == f"real server {REAL_SERVER}, client {CLIENT}"
    # ipvsadm -Lnc: pro expire state source virtual destination. Other kernel tests may have left
    # entries of their own (they expire in minutes), from the same client addresses too: only this
    # client's entries on this VIP count.
    entries = [line.split() for line in connections.splitlines()
               if line.startswith("TCP") and line.split()[3].startswith(f"{CLIENT}:")
               and line.split()[4] == f"{vip}:{PORT}"]
    assert len(entries) == 1, connections
    _, _, state, _, virtual, destination = entries[0]
    assert (state, virtual, destination) == ("ESTABLISHED", f"{vip}:{PORT}", f"{REAL_SERVER}:{REAL_PORT}")
