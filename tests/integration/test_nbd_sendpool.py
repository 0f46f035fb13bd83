"""Reads whose bytes are on the disk, and large reads, are sent from nbd.sendpool's threads: the
event loop keeps answering reads from memory meanwhile. A real disk made slow by a blkio
throttle on the server's cgroup; qemu-io reads the disk, libnbd reads memory. Every byte read
is checked (the pool's large reads: test_nbd_peers' nbdcopy and qemu-img copies)."""

import os
import subprocess
import time

import pytest
from twisted.internet.task import Clock

from nbd.pagecache import FileMap
from nbd.sendpool import INLINE_MAX, SendPool
from tests.support import blkio
from tests.support.nbd import PEER_CWD, Server, load_libnbd, peer_env

SIZE = 256 << 20
COLD_READS = 8            # 4 KiB each, 24 MiB apart: one disk read each, whatever the readahead
IOPS = 4                  # the throttle: about 0.25 s per disk read
WARM = 1 << 20            # the first MiB, read into the page cache by the test

pytestmark = pytest.mark.skipif(not blkio.available(), reason="needs root and cgroup v1 blkio")


def cold_offset(i: int) -> int:
    return (i + 1) * (24 << 20)


@pytest.fixture
def image_dir(tmp_path):
    path = tmp_path / "alpha.img"
    with open(path, "wb") as f:
        for _ in range(SIZE >> 20):
            f.write(os.urandom(1 << 20))
        for i in range(COLD_READS):     # a pattern qemu-io checks (read -P)
            f.seek(cold_offset(i))
            f.write(bytes([0x40 + i]) * 4096)
        f.flush()
        os.fsync(f.fileno())            # clean pages: DONTNEED below really evicts them
    return tmp_path


def evict_all_but_the_first_mib(path) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        warm = os.pread(fd, WARM, 0)
        return warm
    finally:
        os.close(fd)


def run_qemu_io(*commands: str, uri: str) -> None:
    r = subprocess.run(["qemu-io", "-f", "raw", "-r", *commands, uri], env=peer_env(), cwd=PEER_CWD,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_reads_from_the_disk_do_not_hold_reads_from_memory(image_dir, tmp_path):
    image = image_dir / "alpha.img"
    server = Server(image_dir, tmp_path / "server.log")
    libnbd = load_libnbd()
    try:
        h = libnbd.NBD()
        h.connect_uri(server.uri("alpha"))
        baseline = fd_count(server.proc.pid)
        # Every code path once before the throttle: it slows the server's page faults too, and
        # this machine pages out code that sat idle for a minute.
        warm = evict_all_but_the_first_mib(image)
        h.pread(4096, 0)
        run_qemu_io("-c", f"read {SIZE - 8192} 4k", uri=server.uri("alpha"))
        warm = evict_all_but_the_first_mib(image)
        reads = [arg for i in range(COLD_READS) for arg in ("-c", f"read -P {0x40 + i} {cold_offset(i)} 4k")]
        with blkio.throttled(server.proc.pid, blkio.device_of(image), IOPS, f"bootserverd-test-{os.getpid()}"):
            began = time.monotonic()
            cold = subprocess.Popen(["qemu-io", "-f", "raw", "-r", *reads, server.uri("alpha")], env=peer_env(),
                                    cwd=PEER_CWD, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            slowest, count, wrong = 0.0, 0, 0
            while cold.poll() is None and count < 20_000 and time.monotonic() - began < 60:
                offset = (count * 4096 * 7) % (WARM - 4096)
                t = time.monotonic()
                got = h.pread(4096, offset)
                slowest = max(slowest, time.monotonic() - t)
                wrong += got != warm[offset:offset + 4096]
                count += 1
            out, err = cold.communicate(timeout=60)
            cold_seconds = time.monotonic() - began
        h.shutdown()
        assert cold.returncode == 0 and out.count("read 4096/4096 bytes") == COLD_READS, err
        # The throttle works: the disk reads took their time ...
        assert cold_seconds > 0.5 * COLD_READS / IOPS, cold_seconds
        # ... and reads from memory never waited for them (each would have, from the event loop).
        assert wrong == 0 and count > 100, (wrong, count)
        assert slowest < 0.1, f"a read from memory waited {slowest:.3f} s behind the disk"
        # The threads' duplicates of the sockets and files are closed once sent.
        deadline = time.monotonic() + 5
        while fd_count(server.proc.pid) > baseline - 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert fd_count(server.proc.pid) == baseline - 2      # h's socket and image file, and nothing else
        assert "Traceback" not in server.log_text()
    finally:
        server.stop()


def test_what_the_event_loop_sends_itself(image_dir):
    """Small ranges whose pages are cached and up to date; never a large one."""
    pool = SendPool(Clock(), threads=2)
    fd = os.open(image_dir / "alpha.img", os.O_RDONLY)
    fmap = FileMap(fd, SIZE)
    assert pool.in_memory("alpha", fmap, 0, INLINE_MAX + 1)     # no threads yet: the event loop sends all
    pool.start()
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.pread(fd, 8192, 4096)
        assert pool.in_memory("alpha", fmap, 4096, 8192)
        assert not pool.in_memory("alpha", fmap, cold_offset(3), 4096)
        assert not pool.in_memory("alpha", fmap, 4096 - 1, 2)             # one of its two pages is not
        assert not pool.in_memory("alpha", fmap, 0, INLINE_MAX + 1)       # large: a thread, cached or not
        os.pread(fd, 4096, SIZE - 4096)
        assert pool.in_memory("alpha", fmap, SIZE - 512, 512)             # the last page
        # Pages readahead has begun to read are not ready: a sendfile of them would wait.
        with blkio.throttled(os.getpid(), blkio.device_of(image_dir / "alpha.img"), 1, f"bootserverd-test-{os.getpid()}"):
            os.pread(fd, 4096, cold_offset(1))             # takes this second's one read
            os.posix_fadvise(fd, cold_offset(4), 4096, os.POSIX_FADV_WILLNEED)
            assert not pool.in_memory("alpha", fmap, cold_offset(4), 4096)
            began = time.monotonic()
            os.pread(fd, 4096, cold_offset(4))
            assert time.monotonic() - began > 0.3             # it was still on its way
        assert pool.in_memory("alpha", fmap, cold_offset(4), 4096)
    finally:
        pool.stop()
        fmap.close()
        os.close(fd)
