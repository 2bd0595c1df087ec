"""The two ends of a kernel replay's traffic, run in their own network namespaces.

Programs, run by path (``python _peers.py ...``); they import only the standard library.

``python _peers.py server IDENTITY PORT``: a real server. It answers every TCP connection and UDP
datagram on PORT with IDENTITY and a newline; it closes a TCP connection only after the client has
closed its side (as the trace format says). It prints ``ready`` once it listens.

``python _peers.py servers PORT NETNS=IDENTITY ...``: the same for several real servers, each in
the network namespace ``/run/netns/NETNS``, from one process (a Python start costs about 0.3 s
in user-mode Linux; its sockets stay in the namespace they were made in).

``python _peers.py client``: the clients. It reads commands on stdin and answers
each on stdout, one line each::

    open ID tcp CIP CPORT VIP VPORT   ->  ID IDENTITY   or   ID -   (nothing answered in time)
    open ID udp CIP CPORT VIP VPORT   ->  ID IDENTITY   or   ID -
    close ID                          ->  ID closed   (the client's FIN is sent)
    settle SECONDS IDENTITY...        ->  settled     (each of these real servers has answered every
                                          close with its FIN)  or  N unsettled

A closed connection is shut down for writing and kept until the real server's FIN arrives, so
``settle`` can tell when every close has gone both ways through the director. It names the real
servers still in the service: IPVS drops the packets of a deleted one's connections, whose FINs
never arrive.
"""

from __future__ import annotations

import ctypes
import os
import select
import selectors
import socket
import sys
import time

# Under TCP's first SYN retransmission (1 s): a SYN IPVS dropped must not be scheduled again later.
CONNECT_TIMEOUT = 0.6
REPLY_TIMEOUT = 2.0
CLONE_NEWNET = 0x40000000


def _listen(port: int) -> tuple[socket.socket, socket.socket]:
    tcp = socket.create_server(("0.0.0.0", port), backlog=1024, reuse_port=True)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    udp.setblocking(False)
    return tcp, udp


def _in_netns(path: str, port: int) -> tuple[socket.socket, socket.socket]:
    """Listen on ``port`` in the network namespace at ``path``; this thread comes back home."""
    libc = ctypes.CDLL(None, use_errno=True)
    home, there = os.open("/proc/thread-self/ns/net", os.O_RDONLY), os.open(path, os.O_RDONLY)
    try:
        if libc.setns(there, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            return _listen(port)
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(there)


def serve(listeners: list[tuple[socket.socket, socket.socket, str]]) -> None:
    """Answer on every (tcp, udp, identity) listener, until killed."""
    sel = selectors.DefaultSelector()
    for tcp, udp, identity in listeners:
        reply = identity.encode() + b"\n"
        sel.register(tcp, selectors.EVENT_READ, ("accept", reply))
        sel.register(udp, selectors.EVENT_READ, ("udp", reply))
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            kind, reply = key.data
            if kind == "accept":
                conn, _ = sock.accept()
                conn.setblocking(False)
                conn.send(reply)
                sel.register(conn, selectors.EVENT_READ, ("conn", reply))
            elif kind == "udp":
                _, peer = sock.recvfrom(2048)
                sock.sendto(reply, peer)
            elif not sock.recv(4096):  # the client's FIN: close our side too
                sel.unregister(sock)
                sock.close()


def _line(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode().strip()


def _reap(closing: dict[socket.socket, str], timeout: float, identities: set[str] | None = None) -> None:
    """Drop the closed connections whose real server has closed too, waiting up to ``timeout``.

    With ``identities``, wait only while a connection to one of those real servers is open.
    """
    deadline = time.monotonic() + timeout
    while closing and (identities is None or identities & set(closing.values())):
        poll = select.poll()  # not select(): a replay holds more than FD_SETSIZE descriptors at times
        by_fd = {sock.fileno(): sock for sock in closing}
        for fd in by_fd:
            poll.register(fd, select.POLLIN)
        ready = poll.poll(max(0.0, deadline - time.monotonic()) * 1000)
        if not ready:
            return
        for fd, _ in ready:
            sock = by_fd[fd]
            try:
                if sock.recv(4096):  # more data than the identity line: keep waiting for the FIN
                    continue
            except OSError:
                pass
            del closing[sock]
            sock.close()


def client() -> None:
    conns: dict[str, socket.socket] = {}
    identity: dict[str, str] = {}  # connection id -> the real server that answered
    closing: dict[socket.socket, str] = {}  # the client closed, the real server not yet -> who it is
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "settle":
            present = set(words[2:])
            _reap(closing, float(words[1]), present)
            waiting = sum(1 for who in closing.values() if who in present)
            print(f"{waiting} unsettled" if waiting else "settled", flush=True)
            continue
        if closing:
            _reap(closing, 0.0)
        if words[0] == "close":
            conn = conns.pop(words[1], None)
            if conn is not None:
                try:
                    conn.shutdown(socket.SHUT_WR)  # the FIN close() would send; the socket stays to see theirs
                    closing[conn] = identity.pop(words[1], "-")
                except OSError:
                    conn.close()
            print(f"{words[1]} closed", flush=True)
            continue
        ident, proto, cip, cport, vip, vport = words[1:7]
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        answer = "-"
        try:
            sock.bind((cip, int(cport)))
            sock.settimeout(CONNECT_TIMEOUT)
            if proto == "tcp":
                sock.connect((vip, int(vport)))
                sock.settimeout(REPLY_TIMEOUT)
                answer = _line(sock) or "-"
                conns[ident] = sock
                identity[ident] = answer
            else:
                sock.sendto(b"hello\n", (vip, int(vport)))
                answer = sock.recv(2048).decode().strip() or "-"
                sock.close()
        except OSError:
            sock.close()
        print(f"{ident} {answer}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve([(*_listen(int(sys.argv[3])), sys.argv[2])])
    elif sys.argv[1] == "servers":
        port = int(sys.argv[2])
        serve([(*_in_netns(f"/run/netns/{ns}", port), identity)
               for ns, _, identity in (arg.partition("=") for arg in sys.argv[3:])])
    else:
        client()
