"""A restart of the daemon does not end a single NBD client (#16, part 1).

The real daemon runs under tests/support/supervisor.py, which speaks systemd's notify and fd
store protocol as systemd 252 does (systemd is not PID 1 here). A libnbd client reads the
export and checks every byte while the daemon is restarted with SIGTERM (what `systemctl
restart` and every package upgrade do), and killed with -9 and started again (a crash under
Restart=): the client sees a pause, never an error, on the same connection.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

import pytest

from tests.support.config import write_config
from tests.support.images import build_image
from tests.support.nbd import load_libnbd
from tests.support.nbdreader import PipelinedReader
from tests.support.supervisor import Supervisor

IMAGE = "demo-2026-01-01-000000-amd64"
BLOCK = 4096


@pytest.fixture
def served(tmp_path):
    config = write_config(tmp_path, nbd={"enabled": True}, images={"default": IMAGE})
    image = build_image(tmp_path / "images" / f"{IMAGE}.img", extra={"data": os.urandom(4 << 20)})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BOOTSERVERD_ALLOW_ROOT": "1"}
    env.pop("JOURNAL_STREAM", None)
    from tests.support.daemon import REPO
    sup = Supervisor([sys.executable, "-m", "bootserverd", "run", "--config", str(config)], env=env,
                     cwd=REPO, log_path=tmp_path / "daemon.log", fd_store_max=4096)
    try:
        sup.start(timeout=20)
        sup.wait_for(lambda: f"image {IMAGE} published" in sup.log_path.read_text(), timeout=20)
        port = int(config.read_text().split("nbd:")[1].split("127.0.0.1:")[1].split()[0].strip("'\""))
        yield sup, image.read_bytes(), f"nbd://127.0.0.1:{port}/{IMAGE}"
    finally:
        sup.close()


class Reader(threading.Thread):
    """One libnbd connection reading random blocks and checking each; counts errors, keeps the
    longest wait for one reply (the stall a client sees)."""

    def __init__(self, uri: str, data: bytes):
        super().__init__(daemon=True)
        self.h = load_libnbd().NBD()
        self.h.connect_uri(uri)
        self.data, self.rng = data, random.Random(7)
        self.stop, self.idle = threading.Event(), threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.reads = self.errors = self.wrong = 0
        self.longest = 0.0

    def run(self):
        blocks = len(self.data) // BLOCK
        deadline = time.monotonic() + 120
        while not self.stop.is_set() and time.monotonic() < deadline:
            if not self.go.is_set():
                self.idle.set()
                self.go.wait(30)
                self.idle.clear()
                continue
            offset = self.rng.randrange(blocks) * BLOCK
            began = time.monotonic()
            try:
                got = self.h.pread(BLOCK, offset)
            except Exception as e:   # libnbd.Error: the connection is dead
                self.errors += 1
                self.error = e
                return
            self.longest = max(self.longest, time.monotonic() - began)
            self.reads += 1
            self.wrong += got != self.data[offset:offset + BLOCK]

    def reads_after(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        target = self.reads + count
        while self.reads < target and time.monotonic() < deadline and self.is_alive():
            time.sleep(0.01)
        return self.reads >= target


def test_sigterm_restart_is_a_pause_for_a_reading_client(served):
    sup, data, uri = served
    reader = Reader(uri, data)
    reader.start()
    try:
        assert reader.reads_after(200)
        for _ in range(3):                       # three restarts in a row, reading throughout
            stall = sup.restart(signal.SIGTERM, timeout=10)
            assert reader.reads_after(200), f"no reads after the restart: {sup.log_tail(20)}"
        print(f"restart (SIGTERM) stall: daemon ready again {stall:.2f} s after the signal; "
              f"longest wait for one reply {reader.longest:.2f} s; {reader.reads} reads")
        assert (reader.errors, reader.wrong) == (0, 0)
        log = sup.log_path.read_text()
        assert "NBD resumed 1 connections kept across the restart" in log
        assert "NBD kept its listening socket across the restart" in log
        assert len({n for n in sup.names() if n.startswith("nbd-conn-")}) == 1   # one group, no stale ones
    finally:
        reader.stop.set()
        reader.go.set()
        reader.join(15)


def test_kill9_then_start_again_resumes_an_idle_client(served):
    """A crash leaves no handover: a client with nothing in flight at that moment carries on
    (one with requests in flight: test_kill9_in_the_middle_of_answers_loses_none_and_repeats_none)."""
    sup, data, uri = served
    reader = Reader(uri, data)
    reader.start()
    try:
        assert reader.reads_after(100)
        reader.go.clear()
        assert reader.idle.wait(10)
        sup.kill9()
        time.sleep(1.0)                          # what Restart= waits, roughly
        sup.start(timeout=20)
        reader.go.set()
        assert reader.reads_after(100), sup.log_tail(20)
        assert (reader.errors, reader.wrong) == (0, 0)
        assert "NBD resumed 1 connections kept across the restart" in sup.log_path.read_text()
    finally:
        reader.stop.set()
        reader.go.set()
        reader.join(15)


def test_a_client_that_ends_is_gone_from_the_store_and_a_stop_ends_the_rest(served):
    sup, data, uri = served
    reader = Reader(uri, data)
    reader.start()
    assert reader.reads_after(10)
    reader.stop.set()
    reader.join(15)
    sup.wait_for(lambda: any(n.startswith("nbd-conn-") for n in sup.names()), timeout=5)
    reader.h.shutdown()
    sup.wait_for(lambda: not any(n.startswith("nbd-conn-") for n in sup.names()), timeout=5)


def _reset(h) -> None:
    """The client's connection ends with a RST (a PC that drops off): connect(AF_UNSPEC) on a
    TCP socket disconnects it with a reset, on libnbd's socket, which libnbd then closes itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    unspec = struct.pack("H14x", socket.AF_UNSPEC)
    assert libc.connect(h.aio_get_fd(), unspec, len(unspec)) == 0, os.strerror(ctypes.get_errno())


def _pause(readers):
    for r in readers:
        r.go.clear()
    assert all(r.idle.wait(10) for r in readers)


def _stop(readers):
    for r in readers:
        r.stop.set()
        r.go.set()
    for r in readers:
        r.join(15)


def test_a_classroom_on_one_image_reads_on_through_restarts(served):
    """Clients of one image each open its file: one inode, and a store without kcmp() (systemd's
    same_fd() fallback; the supervisor) keeps one of those fds and drops the others. The file is
    kept once, apart from the connections: every client carries on."""
    sup, data, uri = served
    readers = [Reader(uri, data) for _ in range(3)]
    for r in readers:
        r.start()
    try:
        assert all(r.reads_after(50) for r in readers)
        sup.restart(signal.SIGTERM, timeout=10)
        assert all(r.reads_after(50) for r in readers), sup.log_tail(20)
        _pause(readers)
        sup.kill9()
        time.sleep(0.1)                          # RestartSec's default
        sup.start(timeout=20)
        for r in readers:
            r.go.set()
        assert all(r.reads_after(50) for r in readers), sup.log_tail(20)
        assert [(r.errors, r.wrong) for r in readers] == [(0, 0)] * 3
        names = sup.names()
        assert len({n for n in names if n.startswith("nbd-conn-")}) == 3, names
        assert len([n for n in names if n.startswith("nbd-file-")]) == 1, names
    finally:
        _stop(readers)


def test_a_client_reset_while_the_daemon_is_down_does_not_stop_the_start(served):
    sup, data, uri = served
    staying, leaving = Reader(uri, data), Reader(uri, data)
    for r in (staying, leaving):
        r.start()
    try:
        assert staying.reads_after(20) and leaving.reads_after(20)
        _pause([staying, leaving])
        sup.stop(signal.SIGTERM)
        _reset(leaving.h)                        # its stored socket's peer is gone: ENOTCONN
        sup.start(timeout=20)
        staying.go.set()
        assert staying.reads_after(50), sup.log_tail(20)
        assert (staying.errors, staying.wrong) == (0, 0)
        log = sup.log_path.read_text()
        assert "not resumed: the client is gone" in log and "NBD resumed 1 connections kept across the restart" in log
        assert len({n for n in sup.names() if n.startswith("nbd-conn-")}) == 1, sup.names()
    finally:
        _stop([staying, leaving])


def test_kill9_in_the_middle_of_answers_loses_none_and_repeats_none(served):
    """kill -9 lands while the client's requests are read and not answered, and a reply is half
    in the socket: the next process answers exactly what the dead one owed, from the byte where
    it stopped (nbd.inflight): the client's reads all complete, every byte right."""
    sup, _, uri = served
    image = sup.log_path.parent / "images" / f"{IMAGE}.img"
    reader = PipelinedReader(uri, str(image))
    reader.start()
    rng = random.Random(5)
    try:
        assert reader.reads_after(50), reader.error
        for _ in range(8):
            time.sleep(rng.uniform(0.05, 0.3))      # a random moment of a busy connection
            sup.kill9()
            time.sleep(0.1)                         # RestartSec's default
            sup.start(timeout=20)
            assert reader.reads_after(50), f"{reader.error}; {sup.log_tail(20)}"
        print(f"kill -9 x8 under 8 pipelined 1 MiB reads: {reader.reads} reads, longest wait "
              f"for one reply {reader.longest:.2f} s")
        assert reader.error is None
        log = sup.log_path.read_text()
        assert "answers owed by the stopped process" in log
        assert "not resumed" not in log
    finally:
        reader.close()
