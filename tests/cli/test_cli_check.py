"""lbcore check, run as a user runs it, against real listeners on loopback addresses (127.0.0.x)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Run


class Health(http.server.BaseHTTPRequestHandler):
    """200 on /health, 503 anywhere else."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def servers() -> Iterator[dict[str, int]]:
    """A TCP listener on 127.0.0.1, an HTTP server on 127.0.0.3, and a port nothing listens on at
    127.0.0.2: their ports by name."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    closed = socket.socket()
    closed.bind(("127.0.0.2", 0))  # bound, never listening: a connect is refused
    web = http.server.ThreadingHTTPServer(("127.0.0.3", 0), Health)
    thread = threading.Thread(target=web.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"tcp": tcp.getsockname()[1], "closed": closed.getsockname()[1], "http": web.server_address[1]}
    finally:
        web.shutdown()
        web.server_close()
        tcp.close()
        closed.close()


def deployment(tmp_path: Path, ports: dict[str, int], *, with_closed: bool) -> Path:
    closed = f"      - {{address: 127.0.0.2, port: {ports['closed']}, forward: nat}}\n" if with_closed else ""
    path = tmp_path / "checked.yaml"
    path.write_text(f"""\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers:
      - {{address: 127.0.0.1, port: {ports['tcp']}, forward: nat}}
{closed}    health:
      check: tcp
      policy: {{timeout: 30}}
  - protocol: tcp
    address: 192.0.2.10
    port: 443
    real_servers:
      - {{address: 127.0.0.3, port: {ports['http']}, forward: nat}}
    health:
      check: {{kind: http, path: /health}}
      policy: {{timeout: 30}}
  - protocol: udp
    address: 192.0.2.10
    port: 53
    real_servers:
      - {{address: 198.51.100.1, port: 53}}
""")
    return path


def test_check_runs_every_check_once_and_exits_1_when_one_fails(lbcore: Run, tmp_path: Path,
                                                                servers: dict[str, int]) -> None:
    done = lbcore("check", str(deployment(tmp_path, servers, with_closed=True)))
    assert done.returncode == 1, done.stderr
    header, *rows = [line.split("\t") for line in done.stdout.splitlines()]
    assert header == ["service", "real server", "check", "result", "time", "detail"]
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [
        ("-t 192.0.2.10:80", f"127.0.0.1:{servers['tcp']}", f"tcp 127.0.0.1:{servers['tcp']}", "pass"),
        ("-t 192.0.2.10:80", f"127.0.0.2:{servers['closed']}", f"tcp 127.0.0.2:{servers['closed']}", "FAIL"),
        ("-t 192.0.2.10:443", f"127.0.0.3:{servers['http']}", f"http 127.0.0.3:{servers['http']}", "pass"),
    ]
    assert "Connection" in rows[1][5] and "refused" in rows[1][5].lower()
    assert all(row[4].endswith(" ms") for row in rows)
    assert done.stderr == "lbcore: 2 passed, 1 failed\n"


def test_check_exits_0_when_every_check_passes_and_reports_json(lbcore: Run, tmp_path: Path,
                                                               servers: dict[str, int]) -> None:
    done = lbcore("check", str(deployment(tmp_path, servers, with_closed=False)), "--output", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["version"], report["passed"], report["failed"]) == (1, 2, 0)
    first, second = report["results"]
    assert {k: v for k, v in first.items() if k != "seconds"} == {
        "service": "-t 192.0.2.10:80", "real_server": f"127.0.0.1:{servers['tcp']}", "check": "tcp",
        "target": f"127.0.0.1:{servers['tcp']}", "ok": True, "detail": "connected"}
    assert second["check"] == "http" and second["ok"] is True
    assert all(r["seconds"] >= 0 for r in report["results"])


def test_check_of_a_file_without_checks_passes_and_says_so(lbcore: Run, option_1a: Path) -> None:
    done = lbcore("check", str(option_1a))
    assert (done.returncode, done.stdout) == (0, "")
    assert done.stderr == f"lbcore: {option_1a} has no health-checked service\n"


def test_a_failed_check_is_retried_as_its_policy_says(lbcore: Run, tmp_path: Path, servers: dict[str, int]) -> None:
    path = tmp_path / "retried.yaml"
    path.write_text(f"""\
services:
  - protocol: tcp
    address: 192.0.2.10
    port: 80
    real_servers:
      - {{address: 127.0.0.2, port: {servers['closed']}, forward: nat}}
    health:
      check: tcp
      policy: {{timeout: 30, retry: 2, delay_before_retry: 0.1}}
""")
    done = lbcore("check", str(path), "-o", "json")
    assert done.returncode == 1, done.stderr
    (result,) = json.loads(done.stdout)["results"]
    assert result["ok"] is False and result["detail"].endswith("(attempt 3 of 3)")
    assert result["seconds"] >= 0.2  # two waits between the three attempts, on the loop's clock
