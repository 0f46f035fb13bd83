"""The diff cache's disk budget over real HTTP: diffs fetched with curl fill the cache past
``http.diff_cache_max_bytes``; the next build evicts the diffs that serve the fewest devices
per byte first (not the largest, not the least used); an evicted diff is rebuilt on the next
request (503 + Retry-After, then the same bytes, which `rdiff patch` turns into the new
image); a diff evicted while a slow client downloads it still arrives whole."""
import random
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.http import Daemon, curl, mksquashfs, sha256

SIZE = 256 << 10                      # one file: random bytes, so squashfs stores it as is
EV = [f"ev-2026-0{i + 1}-01-000000-amd64" for i in range(4)]      # V0 … V3
BG = ["bg-2026-01-01-000000-amd64", "bg-2026-02-01-000000-amd64"]
# files changed from one version to the next: V0→V3 differs in 14, V1→V3 in 8, V2→V3 in 2
STEPS = [range(0, 6), range(6, 12), range(12, 14)]
# devices reporting each current image (all want V3): A = V0→V3 serves 2, B = V1→V3 6, C = V2→V3 1
REPORTS = {EV[0]: 2, EV[1]: 6, EV[2]: 1}


def tree(root: Path, files: int, seed: int) -> None:
    rng = random.Random(seed)
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "vmlinuz").write_bytes(b"kernel" + rng.randbytes(4096))
    (root / "boot" / "initrd.img").write_bytes(b"initrd" + rng.randbytes(4096))
    (root / "data").mkdir(exist_ok=True)
    for i in range(files):
        (root / "data" / f"f{i:02}").write_bytes(rng.randbytes(SIZE))


def change(root: Path, indices, seed: int) -> None:
    rng = random.Random(seed)
    for i in indices:
        (root / "data" / f"f{i:02}").write_bytes(rng.randbytes(SIZE))


def rdiff(old: Path, new: Path, out: Path) -> bytes:
    """The oracle: the delta Debian's rdiff makes with the server's block size."""
    sig = out.with_suffix(".sig")
    subprocess.run(["rdiff", "--block-size", "4096", "signature", str(old), str(sig)], check=True)
    subprocess.run(["rdiff", "--block-size", "4096", "delta", str(sig), str(new), str(out)], check=True)
    return out.read_bytes()


def fetch(d, source: str, target: str, out: Path, timeout: float = 60) -> tuple[bool, int]:
    """curl until 200: (a 503 with Retry-After was seen first, Retry-After)."""
    url = d.url(f"/diffs/{source}--{target}.rdiff")
    seen, retry = False, 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        headers = out.with_suffix(".headers")
        got = curl("-o", str(out), "-D", str(headers), "-w", "%{http_code}", url)
        code = int(got.stdout or 0)
        if code == 200:
            return seen, retry
        assert code == 503, (code, out.read_bytes()[:300])
        found = re.search(r"(?im)^retry-after:\s*(\d+)", headers.read_text())
        assert found, headers.read_text()
        seen, retry = True, int(found[1])
        time.sleep(0.1)
    raise AssertionError(f"{source} → {target} not served in {timeout} s:\n{d.log()}")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-eviction")
    images = work / "images"
    images.mkdir()
    t = work / "ev"
    tree(t, 24, seed=1)
    mksquashfs(t, images / f"{EV[0]}.img")
    for step, (name, indices) in enumerate(zip(EV[1:], STEPS), start=2):
        change(t, indices, seed=step)
        mksquashfs(t, images / f"{name}.img")
    b = work / "bg"
    tree(b, 16, seed=10)
    mksquashfs(b, images / f"{BG[0]}.img")
    change(b, range(15), seed=11)
    mksquashfs(b, images / f"{BG[1]}.img")
    oracle = work / "oracle"
    oracle.mkdir()
    pairs = {"A": (EV[0], EV[3]), "B": (EV[1], EV[3]), "C": (EV[2], EV[3]), "D": (BG[0], BG[1])}
    expected = {k: rdiff(images / f"{s}.img", images / f"{t_}.img", oracle / f"{k}.rdiff")
                for k, (s, t_) in pairs.items()}
    size = {k: len(v) for k, v in expected.items()}
    # The budget holds A + B + C exactly; D (0 devices, just built, so spared) pushes it over.
    budget = size["A"] + size["B"] + size["C"]
    # The sizes must make the order tell the policies apart: D > A makes one eviction too few,
    # B + D fits, so exactly A then C go (largest-first would take A then B; fewest-devices-
    # first would take C first).
    assert size["A"] < size["D"] <= size["A"] + size["C"] and budget >= 1 << 20, size
    devices = [f'  - {{mac: "52:54:00:00:01:{i:02x}", hostname: lap{i:02}}}' for i in range(1, 10)]
    inventory = f"defaults: {{image: {EV[3]}, type: laptop}}\ndevices:\n" + "\n".join(devices) + "\n"
    d = Daemon(work / "d", images, inventory=inventory,
               http_extra=f"  diff_workers: 1\n  diff_cache_max_bytes: {budget}\n")
    yield d, images, pairs, expected, work
    d.stop()


def cached_pairs(d) -> set[tuple[str, str]]:
    import json
    return {tuple(json.loads(p.read_text())[k] for k in ("from", "to"))
            for p in (d.state / "diffs").glob("*.rdiff.json")}


def test_eviction_order_rebuild_and_an_open_download(setup, tmp_path):
    d, images, pairs, expected, work = setup
    # 1. devices report what they run: this records the demand (and starts building A, B, C)
    host = 1
    for current, count in REPORTS.items():
        for _ in range(count):
            answer = d.json(f"/v1/devices/lap{host:02}?current={current}")
            assert answer["image"] == EV[3] and answer["diff"]["from"] == current
            host += 1
    for key in "ABC":                                  # fetched with curl, byte for byte
        fetch(d, *pairs[key], tmp_path / f"{key}.rdiff")
        assert (tmp_path / f"{key}.rdiff").read_bytes() == expected[key], key
    assert cached_pairs(d) == {pairs[k] for k in "ABC"}
    assert "evicted" not in d.log()

    # 2. a slow client starts downloading A (small receive buffer, reads 64 KiB, then waits)
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(10)
    slow.bind(("127.0.0.9", 0))
    slow.connect(("127.0.0.1", d.port))
    slow.sendall(f"GET /diffs/{EV[0]}--{EV[3]}.rdiff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    received = b""
    while len(received) < 64 << 10:
        received += slow.recv(1 << 16)

    # 3. D is built: the cache is over budget, A then C go (fewest devices per byte first)
    seen, _ = fetch(d, *pairs["D"], tmp_path / "D.rdiff")
    assert seen and (tmp_path / "D.rdiff").read_bytes() == expected["D"]
    d.wait(lambda: d.log().count("evicted") >= 2, 10, "two evictions")
    log = d.log()
    evicted = re.findall(r"evicted (\S+) \((\d+) bytes, (\d+) devices\)", log)
    assert [(int(size), int(n)) for _, size, n in evicted] == [
        (len(expected["A"]), REPORTS[EV[0]]), (len(expected["C"]), REPORTS[EV[2]])], evicted
    assert cached_pairs(d) == {pairs["B"], pairs["D"]}
    slow_done = f"HTTP 127.0.0.9 GET /diffs/{EV[0]}--{EV[3]}.rdiff 200"
    assert slow_done not in log, "the slow download ended before the eviction: the test proves nothing"

    # 4. the open download of the evicted A finishes whole (the server keeps its descriptor)
    end = time.monotonic() + 60
    while time.monotonic() < end and (chunk := slow.recv(1 << 16)):
        received += chunk
    slow.close()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == expected["A"], (head[:200], len(body))
    d.wait(lambda: f"{slow_done}: {len(body)} bytes" in d.log(), 10, "the slow transfer's log line")
    line = next(l for l in d.log().splitlines() if slow_done in l)
    assert line.endswith(": done"), line

    # 5. the evicted A is rebuilt on the next request: 503 + Retry-After, then the same bytes
    seen, retry = fetch(d, *pairs["A"], tmp_path / "A2.rdiff")
    assert seen and retry >= 1
    assert (tmp_path / "A2.rdiff").read_bytes() == expected["A"]
    patched = tmp_path / "patched.img"
    subprocess.run(["rdiff", "patch", str(images / f"{EV[0]}.img"), str(tmp_path / "A2.rdiff"), str(patched)],
                   check=True)
    assert sha256(patched) == sha256(images / f"{EV[3]}.img")
    # the rebuilt A is spared; D (no device needs it) goes
    d.wait(lambda: d.log().count("evicted") >= 3, 10, "the third eviction")
    assert cached_pairs(d) == {pairs["A"], pairs["B"]}
    assert "Traceback" not in d.log()
