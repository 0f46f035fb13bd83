"""Disk full while the server writes a diff: the diff cache (state_dir/diffs) is a small tmpfs
made here and filled but for a few KiB. The build fails with one clear log line, the client
gets a 507 with the reason (never a truncated 200), no partial diff stays in the cache, no
rebuild is attempted while nothing was freed, full images keep being served, and once space
is freed the next request builds the diff, which `rdiff patch` turns into the new image."""

from __future__ import annotations

import os
import subprocess
import time

from tests.reliability import figures
from tests.support.http import Daemon, build_pair, curl, sha256

OLD, NEW = "full-2026-01-01-000000-amd64", "full-2026-02-01-000000-amd64"
LEAVE = 48 << 10                    # free bytes left in the cache: room for the signature only


def fill(directory, leave: int) -> int:
    st = os.statvfs(directory)
    amount = max(st.f_bavail * st.f_frsize - leave, 0)
    with open(directory / "filler", "wb") as f:
        for _ in range(amount >> 20):
            f.write(b"\0" * (1 << 20))
        f.write(b"\0" * (amount & ((1 << 20) - 1)))
    return amount


def poll(d, path: str, timeout: float = 60) -> tuple[int, bytes, int]:
    """GET until the answer is not 503: (status, body, 503s seen)."""
    end = time.monotonic() + timeout
    waits = 0
    while time.monotonic() < end:
        status, headers, body = d.get(path)
        if status != 503:
            return status, body, waits
        assert int(headers["Retry-After"]) >= 1
        waits += 1
        time.sleep(0.1)
    raise AssertionError(f"{path}: still 503 after {timeout} s:\n{d.log()}")


def test_disk_full_while_building_a_diff(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    files = figures.scale(40, 400)                      # 2.6 MB or 26 MB images
    build_pair(tmp_path, images, OLD, NEW, files=files)
    cache = tmp_path / "d" / "state" / "diffs"
    cache.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "bsd-diff-tmpfs", str(cache)], check=True)
    d = None
    try:
        filled = fill(cache, LEAVE)
        d = Daemon(tmp_path / "d", images)
        path = f"/diffs/{OLD}--{NEW}.rdiff"
        started = time.monotonic()
        status, body, waits = poll(d, path)
        failed_after = time.monotonic() - started
        assert status == 507, (status, body[:300])
        assert b"no space left on device" in body, body
        log = d.log()
        failures = [line for line in log.splitlines() if " diffs: " in line and "build failed" in line]
        assert len(failures) == 1 and "no space left on device" in failures[0], failures
        assert "Traceback" not in log
        assert sorted(p.name for p in cache.iterdir()) == ["filler"]      # no partial diff, no temp dir
        # asked again while nothing was freed: the same answer, no pointless rebuild
        for _ in range(figures.scale(3, 20)):
            assert d.get(path)[0] == 507
        assert d.log().count(f"diff {OLD} → {NEW}: building") == 1
        # full images are served meanwhile
        out = tmp_path / "full.img"
        got = curl("-f", "-o", str(out), d.url(f"/images/{NEW}.img"))
        assert got.returncode == 0 and sha256(out) == sha256(images / f"{NEW}.img"), got.stderr
        # space freed: the next request builds it
        (cache / "filler").unlink()
        started = time.monotonic()
        status, body, waits_after = poll(d, path)
        rebuilt_after = time.monotonic() - started
        assert status == 200 and waits_after >= 1, status
        delta = tmp_path / "delta.rdiff"
        delta.write_bytes(body)
        patched = tmp_path / "patched.img"
        subprocess.run(["rdiff", "patch", str(images / f"{OLD}.img"), str(delta), str(patched)], check=True)
        assert sha256(patched) == sha256(images / f"{NEW}.img")
        d.wait(lambda: f"diff {OLD} → {NEW}: built" in d.log(), 10, "the build log line")
        assert "Traceback" not in d.log()
    finally:
        if d is not None:
            d.stop()
        subprocess.run(["umount", str(cache)], check=False)
    figures.record("disk_full_diff", "Disk full while the server builds a diff (8 MiB tmpfs cache)", [
        ("images", f"{(images / f'{NEW}.img').stat().st_size >> 20} MiB each; the delta is "
                   f"{len(body) >> 10} KiB"),
        ("cache filled", f"{filled >> 10} KiB written, {LEAVE >> 10} KiB left free"),
        ("the client's answer", f"{waits} × 503 + Retry-After while building, then 507 with the reason "
                                f"after {failed_after:.1f} s; never a 200"),
        ("the log line", failures[0].split("] ", 1)[-1].strip()[-120:]),
        ("left in the cache", "nothing (no partial diff, no temporary directory)"),
        ("requests while still full", f"{figures.scale(3, 20)} × 507, no new build started"),
        ("full image meanwhile", "served whole, sha256 verified"),
        ("after freeing space", f"next request built it ({waits_after} × 503, 200 after "
                                f"{rebuilt_after:.1f} s); rdiff patch gives the new image byte for byte")])
