"""The two ends of a kernel replay's traffic, run in their own network namespaces.

``python -m lbcore.testing._peers server IDENTITY PORT``: a real server. It answers every TCP
connection and UDP datagram on PORT with IDENTITY and a newline; it closes a TCP connection only
after the client has closed its side (as the trace format says).

``python -m lbcore.testing._peers client``: the clients. It reads commands on stdin and answers
each on stdout, one line each::

    open ID tcp CIP CPORT VIP VPORT   ->  ID IDENTITY   or   ID -   (nothing answered in time)
    open ID udp CIP CPORT VIP VPORT   ->  ID IDENTITY   or   ID -
    close ID                          ->  ID closed
"""

from __future__ import annotations

import selectors
import socket
import sys

# Under TCP's first SYN retransmission (1 s): a SYN IPVS dropped must not be scheduled again later.
CONNECT_TIMEOUT = 0.6
REPLY_TIMEOUT = 2.0


def server(identity: str, port: int) -> None:
    reply = identity.encode() + b"\n"
    sel = selectors.DefaultSelector()
    tcp = socket.create_server(("0.0.0.0", port), backlog=1024, reuse_port=True)
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("0.0.0.0", port))
    udp.setblocking(False)
    sel.register(tcp, selectors.EVENT_READ, "accept")
    sel.register(udp, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "accept":
                conn, _ = sock.accept()
                conn.setblocking(False)
                conn.send(reply)
                sel.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "udp":
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


def client() -> None:
    conns: dict[str, socket.socket] = {}
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "close":
            conn = conns.pop(words[1], None)
            if conn is not None:
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
            else:
                sock.sendto(b"hello\n", (vip, int(vport)))
                answer = sock.recv(2048).decode().strip() or "-"
                sock.close()
        except OSError:
            sock.close()
        print(f"{ident} {answer}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        client()
