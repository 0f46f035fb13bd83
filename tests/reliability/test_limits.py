"""Floods against the daemon as shipped, on loopback: TFTP RRQ storms (one client, many
clients), NBD connections that go silent, HTTP readers that stop reading. Each holds its
limit, keeps memory bounded and lets the legitimate client finish. Sizes: short in make
test, full in make reliability (figures.scale)."""

from __future__ import annotations

import select
import socket
import subprocess
import threading
import time

import pytest

from tests.reliability import figures
from tests.support.nbd import load_libnbd, random_reads
from tests.support.reliability import IMAGE, connect_from, log_lines, sha256, start_daemon, wait_until

TFTP_PER_CLIENT, TFTP_MAX = 4, 48
NBD_MAX, NBD_PER_CLIENT, NBD_HANDSHAKE = 40, 12, figures.scale(2.0, 8.0)
HTTP_STALL = 2.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("limits")
    d, ports = start_daemon(tmp, image_mb=figures.scale(16, 64),
                            tftp={"max_transfers": TFTP_MAX, "max_transfers_per_client": TFTP_PER_CLIENT,
                                  "timeout": 1.0, "retries": 1},
                            nbd={"max_connections": NBD_MAX, "max_connections_per_client": NBD_PER_CLIENT,
                                 "handshake_timeout": NBD_HANDSHAKE},
                            http={"stall_timeout": HTTP_STALL})
    d.tmp, d.ports = tmp, ports
    yield d
    lines = log_lines(d)
    d.stop()
    assert "Traceback" not in "\n".join(lines + log_lines(d))


def rrq(name: str) -> bytes:
    return b"\x00\x01" + name.encode() + b"\x00octet\x00"


def storm(port: int, sources: list[str], per_source: int, wait: float = 0.6) -> dict:
    """RRQs that are never ACKed, each from its own socket; what came back to each."""
    socks = []
    for host in sources:
        for _ in range(per_source):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((host, 0))
            s.setblocking(False)
            s.sendto(rrq("pxelinux.0"), ("127.0.0.1", port))
            socks.append((host, s))
    got: dict[int, bytes] = {}
    deadline = time.monotonic() + wait
    by_fd = {s.fileno(): (h, s) for h, s in socks}
    poller = select.poll()                      # select() stops at descriptor 1024
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while time.monotonic() < deadline and len(got) < len(socks):
        for fd, _ in poller.poll(50):
            poller.unregister(fd)
            try:
                got[fd] = by_fd[fd][1].recv(70000)[:2]
            except BlockingIOError:
                pass
    data = {}
    for fd, (host, s) in by_fd.items():
        kind = {b"\x00\x03": "data", b"\x00\x05": "error"}.get(got.get(fd), "silent")
        data.setdefault(host, {"data": 0, "error": 0, "silent": 0})[kind] += 1
        s.close()
    return data


def curl_tftp(port: int, out, seconds: float) -> tuple[bool, float]:
    """A legitimate client that retries like a PXE ROM until it has the file."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        r = subprocess.run(["curl", "-s", "--max-time", "5", "-o", str(out),
                            f"tftp://127.0.0.1:{port}/pxelinux.0"], capture_output=True)
        if r.returncode == 0 and out.stat().st_size == 300_000:
            return True, time.monotonic() - started
        time.sleep(0.2)
    return False, time.monotonic() - started


def test_tftp_rrq_storms_hold_the_caps(daemon, tmp_path):
    port = daemon.ports["tftp"]
    one = storm(port, ["127.0.0.2"], figures.scale(300, 3000))["127.0.0.2"]
    assert one["data"] == TFTP_PER_CLIENT, one          # exactly the per-client cap started
    ok1, t1 = curl_tftp(port, tmp_path / "a", 20)
    hosts = [f"127.0.{n // 250 + 1}.{n % 250 + 1}" for n in range(figures.scale(40, 400))]
    many = storm(port, hosts, figures.scale(6, 10))
    started = sum(v["data"] for v in many.values())
    assert all(v["data"] <= TFTP_PER_CLIENT for v in many.values()), many
    assert started <= TFTP_MAX, started                  # the global cap (the rest: silent)
    legit = [curl_tftp(port, tmp_path / f"l{i}", 30) for i in range(3)]
    assert ok1 and all(ok for ok, _ in legit), legit
    rss = figures.peak_rss_kib(daemon.proc.pid)
    figures.record("tftp_storm", "TFTP RRQ storms (never-ACKed RRQs, loopback)", [
        ("one client", f"{sum(one.values())} RRQs: {one['data']} transfers started "
                       f"(cap {TFTP_PER_CLIENT}), {one['error']} refused with an error"),
        ("many clients", f"{len(hosts)} addresses × {figures.scale(6, 10)} RRQs: {started} started "
                         f"(cap {TFTP_MAX}), max {max(v['data'] for v in many.values())} per client, "
                         f"{sum(v['silent'] for v in many.values())} dropped silently (server busy)"),
        ("legitimate curl", f"4/4 complete (100 %); slowest {max([t1] + [t for _, t in legit]):.1f} s "
                            "incl. retries while the storm's slots time out"),
        ("daemon peak RSS", f"{rss / 1024:.0f} MiB")])


def test_nbd_silent_connections(daemon):
    libnbd = load_libnbd()
    port = daemon.ports["nbd"]
    image = daemon.tmp / "images" / f"{IMAGE}.img"
    data = image.read_bytes()
    legit = libnbd.NBD()
    legit.connect_uri(f"nbd://127.0.0.1:{port}/{IMAGE}")
    stats = {"reads": 0, "errors": 0, "wrong": 0}
    stop = threading.Event()

    def reader():
        stats.update(random_reads(libnbd, legit, data, stop, seed=1, seconds=60))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    total = figures.scale(200, 1000)
    hosts = [f"127.0.2.{n // 15 + 1}" for n in range(total)]     # 15 from each address in turn
    socks, refused = [], 0
    started = time.monotonic()
    for host in hosts:
        try:
            socks.append((host, connect_from(host, port, timeout=2)))
        except OSError:
            refused += 1
    opened = time.monotonic() - started
    assert opened < NBD_HANDSHAKE, f"opening took {opened:.1f} s: the first ones may have timed out"
    held: dict[str, int] = {}
    pending = {s.fileno(): (h, s) for h, s in socks}
    deadline = started + NBD_HANDSHAKE * 0.9      # before the first greeted ones time out
    poller = select.poll()
    for fd in pending:
        poller.register(fd, select.POLLIN)
    while pending and time.monotonic() < deadline:
        for fd, _ in poller.poll(50):             # greeted: held; EOF first: refused at once
            poller.unregister(fd)
            host, s = pending.pop(fd)
            try:
                first = s.recv(18)
            except OSError:
                first = b""
            if first:
                held[host] = held.get(host, 0) + 1
            else:
                refused += 1
    assert not pending, f"{len(pending)} connections neither greeted nor closed in time"
    peak = sum(held.values())
    assert peak <= NBD_MAX - 1, peak                  # the legit client holds one slot
    assert max(held.values()) <= NBD_PER_CLIENT, held
    socks = [s for _, s in socks]

    def closed(s):
        s.settimeout(0)
        try:
            return s.recv(4096) == b"" or closed(s)
        except BlockingIOError:
            return False
        except OSError:
            return True
    all_closed = wait_until(lambda: all(closed(s) for s in socks), NBD_HANDSHAKE + 5 + opened)
    waited = time.monotonic() - started
    for s in socks:
        s.close()
    fresh = libnbd.NBD()
    fresh.connect_uri(f"nbd://127.0.0.1:{port}/{IMAGE}")
    assert fresh.pread(4096, 8192) == data[8192:12288]
    fresh.shutdown()
    stop.set()
    thread.join(10)
    legit.shutdown()
    assert all_closed
    assert stats["reads"] > 0 and stats["errors"] == 0 and stats["wrong"] == 0, stats
    rss = figures.peak_rss_kib(daemon.proc.pid)
    refusals = sum("NBD refused" in l for l in log_lines(daemon))
    # one line per address and limit per minute, however many connections were refused
    assert 0 < refusals <= 2 * len(set(hosts)), (refusals, refused)
    figures.record("nbd_silent", "NBD connections that go silent (loopback)", [
        ("silent connections opened", f"{total}, 15 from each of {len(set(hosts))} addresses"),
        ("held by the server", f"{peak} + the legit one (max_connections {NBD_MAX}, at most "
                               f"{max(held.values())} per client, cap {NBD_PER_CLIENT}); {refused} refused at once"),
        ("all closed by the server", f"yes, {waited:.1f} s after the first (handshake_timeout {NBD_HANDSHAKE} s)"),
        ("legitimate reader during the flood", f"{stats['reads']} reads, {stats['errors']} errors, "
                                               f"{stats['wrong']} wrong bytes"),
        ("new client afterwards", "served (libnbd pread verified)"),
        ("daemon peak RSS", f"{rss / 1024:.0f} MiB"),
        ("log lines for the refusals", f"{refusals} for {refused} refused connections "
                                       "(one per address and limit per minute, with a count)")])


def test_http_slow_readers_memory_bounded(daemon, tmp_path):
    port = daemon.ports["http"]
    image = daemon.tmp / "images" / f"{IMAGE}.img"
    pid = daemon.proc.pid
    before = figures.rss_kib(pid)
    count = figures.scale(60, 400)
    socks = []
    for i in range(count):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)     # and never read
        s.bind((f"127.0.3.{i % 200 + 1}", 0))
        s.connect(("127.0.0.1", port))
        path = f"/images/{IMAGE}.img" if i % 2 else "/tftp/pxelinux.0"
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        socks.append(s)
    time.sleep(0.5)
    during = figures.rss_kib(pid)
    out = tmp_path / "legit.img"
    r = subprocess.run(["curl", "-sf", "--max-time", "60", "-o", str(out),
                        f"http://127.0.0.1:{port}/images/{IMAGE}.img"], capture_output=True)
    legit_ok = r.returncode == 0 and sha256(out) == sha256(image)

    def drain(s):
        """(bytes read, closed by the server)"""
        s.settimeout(0)
        n = 0
        try:
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    return n, True
                n += len(chunk)
        except BlockingIOError:
            return n, False
        except OSError:
            return n, True
    time.sleep(HTTP_STALL + 1.5)          # the server's stall timer cuts what made no progress
    results = [drain(s) for s in socks]
    for s in socks:
        s.close()
    after = figures.rss_kib(pid)
    big = [closed for i, (_, closed) in enumerate(results) if i % 2]
    small = [n for i, (n, _) in enumerate(results) if not i % 2]
    assert legit_ok, r.stderr
    growth = (during - before) / 1024
    # image downloads use sendfile: nothing in user space. A small file is copied through
    # Twisted's buffer, up to its size per connection (0.3 MiB here).
    bound = 32 + 0.3 * (count // 2)
    assert growth < bound, f"RSS grew {growth:.0f} MiB with {count} slow readers"
    figures.record("http_slow", "HTTP readers that stop reading (loopback)", [
        ("slow connections", f"{count} (half a {image.stat().st_size >> 20} MiB image, half a 300 kB boot file), "
                             "receive buffer 4 KiB, never read"),
        ("daemon RSS", f"{before / 1024:.0f} MiB before, {during / 1024:.0f} MiB during, "
                       f"{after / 1024:.0f} MiB after (growth {growth:.1f} MiB)"),
        ("legitimate curl of the whole image meanwhile", "complete, sha256 verified" if legit_ok else "FAILED"),
        ("image downloads cut by the server", f"{sum(big)} of {len(big)} within stall_timeout {HTTP_STALL} s + 1.5 s"),
        ("boot-file downloads", f"{sum(n > 300_000 for n in small)} of {len(small)} delivered whole when read "
                                "at the end; the rest wait in Twisted's buffer (the response was written "
                                "whole), ended by the 60 s idle timeout")])
    assert all(big), results
