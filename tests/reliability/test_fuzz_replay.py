"""After fuzzing, the real service still answers a real client: the fuzz corpora plus random
mutations of them are sent at the daemon as shipped (TFTP datagrams, NBD byte streams, raw
HTTP requests), then curl (TFTP and HTTP) and nbdinfo must be served, with no traceback."""

from __future__ import annotations

import random
import socket
import subprocess

import pytest

from tests.fuzz import harness
from tests.reliability import figures
from tests.support.nbd import PEER_CWD, peer_env
from tests.support.reliability import IMAGE, log_lines, start_daemon


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 8)):
        op = rng.randrange(3)
        if op == 0 and b:
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif b:
            del b[rng.randrange(len(b))]
    return bytes(b)


def inputs(target: str, count: int, rng: random.Random) -> list[bytes]:
    seeds = [p.read_bytes()[1:] for p in harness.corpus_files(target)]   # drop the selector byte
    return seeds + [mutate(rng, rng.choice(seeds)) for _ in range(count)]


# A log line that is not UTF-8 kills the harness's reader thread: make that a failure.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_daemon_serves_real_clients_after_fuzz_traffic(tmp_path):
    rng = random.Random(10)
    count = figures.scale(300, 5000)
    daemon, ports = start_daemon(tmp_path, image_mb=1)
    try:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sent = {"tftp": 0, "nbd": 0, "http": 0}
        for data in inputs("tftp", count, rng):
            udp.sendto(data or b"\0", ("127.0.0.1", ports["tftp"]))
            sent["tftp"] += 1
        udp.close()
        for name, stream_of in (("nbd", lambda d: d[2:]), ("http", None)):
            seeds = inputs("nbd", count // 10, rng) if name == "nbd" else \
                [f"GET /{p} HTTP/1.1\r\nHost: x\r\nRange: bytes={rng.randrange(-5, 99)}-\r\n\r\n".encode()
                 for p in ("tftp/pxelinux.0", "tftp/../../etc/passwd", f"images/{IMAGE}.img", "ipxe/default.ipxe",
                           "tftp/%ff%fe", "diffs/a--b.rdiff", "v1/devices/legit", "status")]
            if name == "http":
                seeds += [mutate(rng, rng.choice(seeds)) for _ in range(count // 10)]
            for data in seeds:
                with socket.create_connection(("127.0.0.1", ports[name]), timeout=2) as s:
                    try:
                        s.sendall(stream_of(data) if stream_of else data)
                        s.shutdown(socket.SHUT_WR)
                        s.recv(65536)
                    except OSError:
                        pass
                sent[name] += 1
        tftp = subprocess.run(["curl", "-sf", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}",
                               f"tftp://127.0.0.1:{ports['tftp']}/pxelinux.0"], capture_output=True, text=True)
        http = subprocess.run(["curl", "-sf", "--max-time", "10", "-o", "/dev/null", "-w", "%{size_download}",
                               f"http://127.0.0.1:{ports['http']}/images/{IMAGE}.img"], capture_output=True, text=True)
        nbd = subprocess.run(["nbdinfo", "--size", f"nbd://127.0.0.1:{ports['nbd']}/{IMAGE}"], capture_output=True,
                             text=True, timeout=20, cwd=PEER_CWD, env=peer_env())
        lines = list(log_lines(daemon))
    finally:
        daemon.stop()
    image_size = (tmp_path / "images" / f"{IMAGE}.img").stat().st_size
    assert tftp.stdout == "300000" and int(http.stdout or 0) == image_size, (tftp, http)
    assert nbd.returncode == 0 and int(nbd.stdout) == image_size, nbd
    text = "\n".join(lines + log_lines(daemon))
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]
    figures.record("fuzz_service", "The real service after fuzz traffic (daemon as shipped, loopback)", [
        ("sent", f"{sent['tftp']} TFTP datagrams, {sent['nbd']} NBD streams, {sent['http']} HTTP requests "
                 "(fuzz corpora and random mutations)"),
        ("then", "curl TFTP, curl HTTP (whole image) and nbdinfo all served; no traceback in the log")])
