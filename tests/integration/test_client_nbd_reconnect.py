"""The reconnect helper's I/O on this machine (the kernel part, NBD_CMD_RECONFIGURE, runs only in
the real Debian guest: tests/e2e/test_debian_reconnect.py; this host's kernel has no nbd):

- ``connect_export`` does the handshake with real servers over loopback, bootserverd's NBD
  service and nbdkit, and leaves a blocking socket in the transmission phase: a read request
  written on it gets the export's bytes, as the kernel's would;
- a wrong size (another image under the name) or an unknown export is refused;
- once ``lock_in_memory`` ran, the process imports nothing more, formats tracebacks without
  reading a source file, and has its memory locked.
"""

from __future__ import annotations

import os
import time
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bootserverd_client import nbdkeeper, nbdwire
from tests.support.nbd import Server
from tests.support.procs import end

REPO = Path(__file__).resolve().parents[2]
SIZE = 1 << 20


@pytest.fixture
def image(tmp_path):
    data = bytes(range(256)) * (SIZE // 256)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "root.img").write_bytes(data)
    return tmp_path / "images" / "root.img", data


def addresses(port: int) -> list[tuple]:
    return socket.getaddrinfo("127.0.0.1", port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)


def read_through(sock: socket.socket, offset: int, length: int) -> bytes:
    """One NBD_CMD_READ in the transmission phase (simple reply), as the kernel sends it."""
    sock.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, 0xABCD, offset, length))
    head = nbdkeeper._recv_exact(sock, 16)
    magic, error, handle = struct.unpack(">IIQ", head)
    assert (magic, error, handle) == (0x67446698, 0, 0xABCD)
    return nbdkeeper._recv_exact(sock, length)


def check_handed_over_socket(sock: socket.socket, data: bytes) -> None:
    assert sock.gettimeout() is None                          # blocking, as the kernel uses it
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == nbdkeeper.USER_TIMEOUT_MS
    assert read_through(sock, 4096 + 7, 1000) == data[4096 + 7:4096 + 1007]


def test_handshake_with_bootserverd(tmp_path, image):
    path, data = image
    server = Server(tmp_path / "images", tmp_path / "server.log")
    try:
        with nbdkeeper.connect_export(addresses(server.port), "root", SIZE) as sock:
            check_handed_over_socket(sock, data)
        with pytest.raises(nbdwire.HandshakeError, match="not the same image"):
            nbdkeeper.connect_export(addresses(server.port), "root", SIZE + 4096)
        with pytest.raises(nbdwire.HandshakeError, match="NBD_REP_ERR_UNKNOWN"):
            nbdkeeper.connect_export(addresses(server.port), "no-such-image", SIZE)
    finally:
        end(server.proc)


def test_handshake_with_nbdkit(tmp_path, image):
    path, data = image
    with socket.socket() as probe:          # a free port for nbdkit
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(["nbdkit", "-f", "-r", "--exit-with-parent", "-i", "127.0.0.1", "-p", str(port),
                             "file", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        sock = None
        for _ in range(100):                # nbdkit listens within a second
            try:
                sock = nbdkeeper.connect_export(addresses(port), "root", SIZE)
                break
            except ConnectionRefusedError:
                time.sleep(0.05)
        assert sock is not None, proc.stderr.read() if proc.poll() is not None else "nbdkit did not listen"
        with sock:
            check_handed_over_socket(sock, data)
    finally:
        end(proc)


def test_nothing_answers_is_an_os_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]       # bound, never listening: refused
        with pytest.raises(ConnectionRefusedError):
            nbdkeeper.connect_export(addresses(port), "root", SIZE)


LOCKED = """
import sys, traceback
from bootserverd_client import nbdkeeper
nbdkeeper.lock_in_memory(nbdkeeper.Log(use_kmsg=False))
try:
    import xml.dom.minidom
    print("imported")
except ImportError as e:
    print("refused:", e)
try:
    raise ValueError("boom")
except ValueError:
    text = traceback.format_exc()
    print("source lines:", "raise ValueError" in text)
print("VmLck kB:", nbdkeeper._status_kb("VmLck"))
"""


def test_locked_in_memory_it_imports_nothing_and_reads_no_source(tmp_path):
    done = subprocess.run([sys.executable, "-c", LOCKED], cwd=REPO, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("refused: xml: imported after bootserverd-nbd-reconnect locked"), lines
    assert lines[1] == "source lines: False"
    assert int(lines[2].split()[-1]) > 4096, lines          # the interpreter and pyroute2, resident
    assert "locked in memory" in done.stderr
