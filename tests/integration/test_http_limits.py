"""http.max_connections_per_client and http.header_timeout against real clients: keep-alive
requests within the deadline are served, an idle keep-alive connection and a stalled request
are cut after header_timeout, a response still being delivered is not, and the connection
over the cap gets a 429 that curl reports."""
import http.client
import socket
import subprocess
import time

import pytest

from tests.support.http import Daemon, curl
from tests.support.images import build_image

IMAGE = "lim-2026-01-01-000000-amd64"


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-limits")
    (work / "images").mkdir()
    build_image(work / "images" / f"{IMAGE}.img")
    daemon = Daemon(work / "d", work / "images",
                    http_extra="  max_connections_per_client: 3\n  header_timeout: 1.0\n")
    yield daemon
    daemon.stop()


def closed_within(s: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed ``s`` (None if it did not within ``seconds``)."""
    began = time.monotonic()
    s.settimeout(seconds)
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        return None
    except OSError:
        pass
    return time.monotonic() - began


def test_keep_alive_requests_then_idle_cut(d):
    conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=5)
    for _ in range(3):
        conn.request("GET", "/images/")
        assert conn.getresponse().read().startswith(b"{")
        time.sleep(0.5)                                  # within header_timeout between requests
    began = time.monotonic()
    waited = closed_within(conn.sock, 5)
    assert waited is not None and 0.3 < waited + 0.5 < 2.0, waited
    assert time.monotonic() - began < 3
    conn.close()


def test_idle_keep_alive_ends_with_a_reset_leaving_no_socket(d):
    """GRUB reuses its source ports (21550, ...) on every boot and never closes: the server's
    end of a used, idle keep-alive connection must be gone, not in FIN_WAIT, when it ends."""
    s = socket.create_connection(("127.0.0.1", d.port))
    port = s.getsockname()[1]
    s.sendall(b"GET /images/ HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while s.recv(65536):
            pass
    assert _server_sockets(d, port) == ""               # the server's socket is gone at once
    s.close()
    assert "no complete request" not in d.log()         # an ordinary end is not logged as a cut


def _server_sockets(d, client_port: int) -> str:
    return subprocess.run(["ss", "-Htan", f"( sport = :{d.port} and dport = :{client_port} )"],
                          capture_output=True, text=True, timeout=10).stdout.strip()


def test_client_closing_after_its_response_leaves_no_socket(d):
    """GRUB closes each file's connection (FIN) and boots: the server must not wait in LAST_ACK
    for an ACK that never comes, or the PC's next boot (same ports) times out."""
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"GET /images/ HTTP/1.1\r\nHost: x\r\n\r\n")
    s.settimeout(5)
    assert s.recv(65536).startswith(b"HTTP/1.1 200")
    s.shutdown(socket.SHUT_WR)
    with pytest.raises(ConnectionResetError):
        while s.recv(65536):
            pass
    assert _server_sockets(d, s.getsockname()[1]) == ""
    s.close()


def test_client_half_closing_before_the_response_still_gets_it(d):
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(f"GET /images/{IMAGE}.img HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    s.shutdown(socket.SHUT_WR)                          # like `nc -N`: request sent, then EOF
    s.settimeout(10)
    data = b""
    while chunk := s.recv(1 << 20):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
    assert len(body) == length
    s.close()


def test_stalled_request_is_cut(d):
    s = socket.create_connection(("127.0.0.1", d.port))
    s.sendall(b"GET /images/ HTTP/1.1\r\nHost: x\r\n")        # never ends its headers
    for _ in range(3):
        time.sleep(0.25)
        s.sendall(b"X-A: b\r\n")                               # bytes keep coming, but too slowly
    waited = closed_within(s, 5)
    assert waited is not None and waited < 2.0
    s.close()
    assert "no complete request within 1 s" in d.log()


def test_slow_reader_of_a_response_is_not_cut_by_the_header_deadline(d, tmp_path):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", d.port))
    s.sendall(f"GET /images/{IMAGE}.img HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    time.sleep(2.5)                                        # 2.5 × header_timeout, reading nothing
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")).split(b":")[1])
    while len(body) < length:
        chunk = s.recv(1 << 20)
        assert chunk, f"cut after {len(body)} of {length} bytes"
        body += chunk
    s.close()


def test_over_the_cap_gets_429(d):
    held = [socket.create_connection(("127.0.0.1", d.port)) for _ in range(3)]
    try:
        time.sleep(0.1)
        got = curl("-o", "/dev/null", "-w", "%{http_code}", d.url("/images/"))
        assert got.stdout == b"429", got
    finally:
        for s in held:
            s.close()
    time.sleep(0.2)
    got = curl("-o", "/dev/null", "-w", "%{http_code}", d.url("/images/"))
    assert got.stdout == b"200"
    assert "refused with 429" in d.log()
