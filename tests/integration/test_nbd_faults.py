"""Faults no well-behaved peer produces: abrupt close, silence, floods, bad bytes, limits."""

import os
import socket
import struct
import sys
import time

import pytest

from tests.support.nbd import ROOT, Server, raw_go, recv_exact

sys.path.insert(0, str(ROOT))
from nbd import codec as c  # noqa: E402

SIZE = 8 << 20


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbd-faults")
    (d / "alpha.img").write_bytes(os.urandom(SIZE))
    return d


@pytest.fixture(scope="module")
def data(image_dir):
    return (image_dir / "alpha.img").read_bytes()


@pytest.fixture(scope="module")
def server(image_dir, tmp_path_factory):
    s = Server(image_dir, tmp_path_factory.mktemp("log") / "server.log",
               "--handshake-timeout", "0.5", "--max-connections", "6", "--max-per-client", "3")
    yield s
    s.stop()


def read_simple(sock):
    magic, err, handle = c.SIMPLE_REPLY.unpack(recv_exact(sock, 16))
    assert magic == c.SIMPLE_REPLY_MAGIC
    return err, handle


def connect(port, source="127.0.0.1"):
    s = socket.socket()
    s.settimeout(5)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    return s


def is_closed(sock, timeout=3.0) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def test_abrupt_disconnect_mid_reply_leaves_the_server_serving(server, data):
    s, size, _ = raw_go(server.port, "alpha")
    s.sendall(b"".join(c.request(c.CMD_READ, i, (i % 8) << 20, 1 << 20) for i in range(64)))
    recv_exact(s, 100_000)                      # part of the first reply
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()                                    # RST in the middle of the data
    text = server.wait_log("export 'alpha' disconnected")
    assert "mid-reply" in text
    s2, _, _ = raw_go(server.port, "alpha")
    s2.sendall(c.request(c.CMD_READ, 7, 4096, 512))
    assert read_simple(s2) == (0, 7) and recv_exact(s2, 512) == data[4096:4608]
    s2.close()


def test_silent_socket_is_closed_after_the_handshake_timeout(server):
    s = connect(server.port)
    assert recv_exact(s, 18)[:8] == b"NBDMAGIC"
    t0 = time.monotonic()
    assert is_closed(s, 3.0)
    assert 0.3 < time.monotonic() - t0 < 2.5
    server.wait_log("no export chosen within 0.5 s")
    s.close()


def test_client_stalling_mid_negotiation_is_closed_too(server):
    s = connect(server.port)
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 3) + c.option_request(c.OPT_STRUCTURED_REPLY))
    recv_exact(s, 20)
    assert is_closed(s, 3.0)
    s.close()


def test_the_timeout_does_not_touch_a_session_in_transmission(server, data):
    s, _, _ = raw_go(server.port, "alpha")
    time.sleep(0.8)
    s.sendall(c.request(c.CMD_READ, 1, 0, 16))
    assert read_simple(s) == (0, 1) and recv_exact(s, 16) == data[:16]
    s.close()


def test_per_client_and_total_connection_limits(server):
    held = [connect(server.port) for _ in range(3)]
    for s in held:
        assert recv_exact(s, 18)[:8] == b"NBDMAGIC"
    extra = connect(server.port)                  # 4th from 127.0.0.1: over the per-client cap
    assert is_closed(extra, 2.0)
    others = [connect(server.port, f"127.0.0.{i}") for i in (2, 3, 4)]
    for s in others:
        assert recv_exact(s, 18)[:8] == b"NBDMAGIC"
    over = connect(server.port, "127.0.0.5")      # 7th overall: over max_connections
    assert is_closed(over, 2.0)
    text = server.wait_log("nbd.max_connections)")
    assert "nbd.max_connections_per_client" in text
    for s in held + others + [extra, over]:
        s.close()
    time.sleep(0.2)
    again = connect(server.port)
    assert recv_exact(again, 18)[:8] == b"NBDMAGIC"
    again.close()


def test_disc_finishes_replies_in_flight_then_closes(server, data):
    s, _, _ = raw_go(server.port, "alpha")
    s.sendall(b"".join(c.request(c.CMD_READ, i, i * 65536, 65536) for i in range(10))
              + c.request(c.CMD_DISC, 99))
    for i in range(10):
        assert read_simple(s) == (0, i)
        assert recv_exact(s, 65536) == data[i * 65536:(i + 1) * 65536]
    assert is_closed(s, 3.0)
    s.close()


def test_bad_magic_closes_and_unknown_command_is_einval(server, data):
    s, _, _ = raw_go(server.port, "alpha")
    s.sendall(c.request(42, 5) + c.request(c.CMD_WRITE, 6, 0, 3) + b"abc"
              + c.request(c.CMD_READ, 7, 0, 4))
    assert read_simple(s) == (c.EINVAL, 5)
    assert read_simple(s) == (c.EPERM, 6)
    assert read_simple(s) == (0, 7) and recv_exact(s, 4) == data[:4]
    s.sendall(b"\xde\xad\xbe\xef" + bytes(24))
    assert is_closed(s, 3.0)
    server.wait_log("bad request magic")
    s.close()


def test_structured_error_chunk_for_a_read_past_the_end(server):
    s, _, _ = raw_go(server.port, "alpha", structured=True)
    s.sendall(c.request(c.CMD_READ, 3, SIZE - 1, 2))
    magic, flags, typ, handle, n = c.CHUNK_HEADER.unpack(recv_exact(s, 20))
    body = recv_exact(s, n)
    assert (magic, flags, typ, handle) == (c.STRUCTURED_REPLY_MAGIC, 1, c.REPLY_TYPE_ERROR, 3)
    assert struct.unpack(">I", body[:4])[0] == c.EINVAL and b"past the end" in body
    s.close()


def test_unknown_client_flags_close_the_connection(server):
    s = connect(server.port)
    recv_exact(s, 18)
    s.sendall(struct.pack(">I", 0x80))
    assert is_closed(s, 3.0)
    s.close()


def test_pipelined_flood_is_answered_with_bounded_memory(server, data):
    """512 x 1 MiB requested without reading: the server must not buffer 512 MiB."""
    s, _, _ = raw_go(server.port, "alpha", timeout=20)
    base = server.rss_kib()
    n = 512
    s.sendall(b"".join(c.request(c.CMD_READ, i, (i % 8) << 20, 1 << 20) for i in range(n)))
    time.sleep(1.0)                               # the server fills the socket and stops
    grown_mib = (server.rss_kib() - base) / 1024
    assert grown_mib < 64, f"server grew by {grown_mib:.0f} MiB"
    for i in range(n):
        assert read_simple(s) == (0, i)
        chunk = recv_exact(s, 1 << 20)
        if i % 37 == 0:
            assert chunk == data[(i % 8) << 20:((i % 8) + 1) << 20]
    s.close()
