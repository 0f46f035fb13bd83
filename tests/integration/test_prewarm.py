"""Prewarm on real files and in the real daemon, checked with util-linux ``fincore``: an image
evicted from the page cache (posix_fadvise DONTNEED) is resident again after its prewarm, and
/status and /metrics say what fincore says; a big image gets only its recorded boot's ranges; a
new version with no trace gets the previous version's traced files, mapped by file."""

import ctypes
import json
import mmap
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from bootserverd.images import prewarmer, residency
from bootserverd.images.prewarmer import Job, run_job
from bootserverd.ops.libc import libc
from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

PAGE = os.sysconf("SC_PAGE_SIZE")
OLD = "desk-2026-11-01-000000-amd64"
NEW = "desk-2026-11-20-000000-amd64"

pytestmark = pytest.mark.skipif(shutil.which("fincore") is None, reason="util-linux fincore not installed")


def fincore(path: Path) -> int:
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    return int(out.strip() or 0)


def evicted(path: Path) -> Path:
    residency.evict(path)
    assert fincore(path) == 0, "posix_fadvise(DONTNEED) did not evict (tmpfs?)"
    return path


def trace_text(image: str, reads) -> str:
    rows = "".join(f"0.{i:06d} READ {offset} {length}\n" for i, (offset, length) in enumerate(reads))
    return (f"# bootserverd nbd trace 1\n# image: {image}\n# client: 10.0.0.23:40312\n"
            f"# started: 2026-12-02T07:59:58.120Z\n# fields: seconds-since-connect command offset length\n"
            f"{rows}# ended: session closed\n# requests: {len(reads)} recorded, 0 not recorded (max_requests 100000)\n")


def write_trace(directory: Path, image: str, reads, stamp="20261202T075958.120Z") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}-10.0.0.23-{image}.trace"
    path.write_text(trace_text(image, reads))
    return path


def job(path: Path, name: str, trace_dir=None, series=(), share=0.5, seconds=60.0) -> Job:
    return Job(name, path, path.stat().st_size, "test", (), tuple(series) or ((name, path),), trace_dir, share, seconds)


# -- the job on real files --
def test_mincore_agrees_with_fincore_and_warm_brings_ranges_in(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(6 << 20))
    evicted(path)
    assert residency.resident_bytes(path) == 0
    done = residency.warm(path, [(0, 1 << 20), (4 << 20, 100)], chunk=256 << 10)
    assert done.bytes == (1 << 20) + 100 and done.stopped == ""
    assert abs(residency.resident_bytes(path) - fincore(path)) <= PAGE
    assert fincore(path) >= (1 << 20) + PAGE


def test_a_job_that_fits_reads_the_whole_image_at_low_priority(tmp_path):
    path = evicted(build_image(tmp_path / f"{NEW}.img", extra={"/data": os.urandom(3 << 20)}))
    result = []
    thread = threading.Thread(target=lambda: result.append(run_job(job(path, NEW))))
    thread.start()
    thread.join(60)
    (r,) = result
    assert (r.how, r.read, r.stopped) == ("whole", path.stat().st_size, "")
    assert r.resident == fincore(path) >= path.stat().st_size
    assert "nice 19" in r.priority
    assert re.match(rf"image {NEW} prewarmed \(test\): whole, [\d.]+ of [\d.]+ MiB read in [\d.]+ s; "
                    r"[\d.]+ of [\d.]+ MiB resident after$", r.line())


def test_a_big_image_gets_the_ranges_its_recorded_boots_read(tmp_path):
    path = evicted(build_image(tmp_path / f"{NEW}.img", extra={"/data": os.urandom(8 << 20)}))
    traces = tmp_path / "nbd-traces"
    write_trace(traces, NEW, [(0, 4096), (5 << 20, 1 << 20), (4096, 8192)])
    write_trace(traces, "other-image", [(2 << 20, 1 << 20)])
    r = run_job(job(path, NEW, traces), mem_total=lambda: 1 << 20)         # half of 1 MiB: too small
    assert r.how == "traced" and r.note == "1 recorded boot"
    assert r.planned == 512 << 10          # the first-read ranges, cut at the budget (page-aligned)
    assert r.read == r.planned
    assert residency.resident_bytes(path) >= r.planned


def test_a_big_image_without_a_recorded_boot_is_left_alone(tmp_path):
    path = evicted(build_image(tmp_path / f"{NEW}.img", extra={"/data": os.urandom(2 << 20)}))
    r = run_job(job(path, NEW, tmp_path / "no-traces"), mem_total=lambda: 1 << 20)
    assert (r.how, r.read, r.resident) == ("none", 0, 0)
    assert r.line().startswith(f"image {NEW} not prewarmed (test): ") and "no boot of it" in r.line()


def test_a_new_version_gets_the_previous_versions_traced_files(tmp_path):
    lib = os.urandom(3 << 20)
    unused = os.urandom(3 << 20)
    old = build_image(tmp_path / f"{OLD}.img", extra={"/usr/lib/libbig.so": lib, "/usr/share/unused": unused})
    new = build_image(tmp_path / f"{NEW}.img", extra={"/opt/first": os.urandom(2 << 20),   # shifts the rest
                                                      "/usr/lib/libbig.so": lib, "/usr/share/unused": unused})
    layouts = {p: prewarmer.layout_of(p) for p in (old, new)}
    old_lib = layouts[old]["/usr/lib/libbig.so"]
    new_lib = layouts[new]["/usr/lib/libbig.so"]
    assert old_lib[0][0] != new_lib[0][0]
    traces = tmp_path / "nbd-traces"
    write_trace(traces, OLD, [(old_lib[1][0] + 10, 4096)])                # one read inside the library
    evicted(new)
    r = run_job(job(new, NEW, traces, series=((OLD, old), (NEW, new))), mem_total=lambda: 16 << 20)
    assert r.how == f"mapped from {OLD}"
    assert r.note == f"1 recorded boot of {OLD}, 1 files mapped, 0 not in this version"
    lib_bytes = sum(n for _, n in new_lib)
    assert lib_bytes - PAGE < r.planned <= lib_bytes + 2 * PAGE
    vec = pages_resident(new)
    for offset, length in new_lib:                                          # the library is in
        assert all(vec[i] for i in range(offset // PAGE, (offset + length - 1) // PAGE + 1))
    first = layouts[new]["/opt/first"]                                      # a file boots never read is not
    assert not any(vec[i] for i in range(first[0][0] // PAGE + 64, (first[-1][0] + first[-1][1]) // PAGE - 64))


def pages_resident(path: Path) -> list[bool]:
    """Per page, resident or not (mincore through bootserverd.ops.libc; the file is a few MiB)."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        vec = (ctypes.c_ubyte * ((size + PAGE - 1) // PAGE))()
        try:
            assert libc.mincore(addr, size, vec) == 0
        finally:
            libc.munmap(addr, size)
        return [bool(b & 1) for b in vec]
    finally:
        os.close(fd)


def test_a_job_stops_when_cancelled_or_out_of_time(tmp_path):
    path = evicted(build_image(tmp_path / f"{NEW}.img", extra={"/data": os.urandom(12 << 20)}))
    j = job(path, NEW)
    j.cancel.set()
    assert run_job(j).stopped == "cancelled"
    ticks = iter(range(0, 1000))
    r = run_job(job(path, NEW, seconds=3.0), clock=lambda: float(next(ticks)))   # one "second" per chunk
    assert r.stopped == "time limit reached" and 0 < r.read < path.stat().st_size


# -- the real daemon --
def status_and_metrics(base: str, name: str) -> tuple[int | None, float | None]:
    status = json.load(urllib.request.urlopen(f"{base}/status", timeout=10))
    text = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    m = re.search(rf'^bootserverd_image_resident_bytes{{image="{re.escape(name)}"}} (\S+)$', text, re.M)
    return status["prewarm"]["images"][name]["resident_bytes"], float(m.group(1)) if m else None


def republish(daemon: Daemon, path: Path, name: str) -> None:
    """Retire the image (hidden name) and publish the same file again: a publication without
    re-hashing (the hash cache keeps it by inode and mtime)."""
    hidden = path.with_name(f".{path.name}")
    path.rename(hidden)
    daemon.wait_for(f"image {name} retired", timeout=20)
    evicted(hidden)
    hidden.rename(path)


def test_the_daemon_prewarms_an_evicted_image_and_reports_its_residency(tmp_path):
    config = write_config(tmp_path, http={"enabled": True},
                          images={"prewarm": {"at": "07:15", "max_share": 0.5, "residency_interval": 1}})
    port = yaml.safe_load(config.read_text())["http"]["listen"].rsplit(":", 1)[1]
    base = f"http://127.0.0.1:{port}"
    path = build_image(tmp_path / "images" / f"{NEW}.img", extra={"/data": os.urandom(16 << 20)})
    size = path.stat().st_size
    with Daemon(config) as daemon:
        daemon.wait_for(f"image {NEW} published", timeout=30)
        daemon.wait_for(f"image {NEW} prewarmed (published): whole", timeout=30)
        republish(daemon, path, NEW)
        line = daemon.wait_for(f"image {NEW} prewarmed (published)", timeout=30)
        assert ": whole, " in line and "stopped" not in line
        resident = fincore(path)
        assert resident >= size
        deadline = time.monotonic() + 10
        while True:                        # the cache is refreshed every second
            in_status, in_metrics = status_and_metrics(base, NEW)
            if in_status is not None and abs(in_status - resident) <= PAGE and in_metrics is not None \
                    and abs(in_metrics - resident) <= PAGE or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert abs(in_status - resident) <= PAGE and abs(in_metrics - resident) <= PAGE, (in_status, in_metrics,
                                                                                           resident)
        status = json.load(urllib.request.urlopen(f"{base}/status", timeout=10))["prewarm"]
        assert status["at"] == "07:15" and status["next_daily"] is not None
        assert status["images"][NEW]["last_prewarm"]["how"] == "whole"

        # evicted again: the periodic measure sees it leave
        residency.evict(path)
        deadline = time.monotonic() + 10
        while status_and_metrics(base, NEW)[0] != fincore(path) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert abs(status_and_metrics(base, NEW)[0] - fincore(path)) <= PAGE
    assert daemon.proc.returncode == 0


def test_the_daemon_prewarms_only_the_traced_ranges_of_an_image_too_big_for_its_share(tmp_path):
    share = (4 << 20) / residency.mem_total()           # a 4 MiB budget: the traced ranges fit, the image not
    config = write_config(tmp_path, images={"prewarm": {"at": None, "max_share": share}})
    path = build_image(tmp_path / "images" / f"{NEW}.img", extra={"/data": os.urandom(16 << 20)})
    write_trace(tmp_path / "state" / "nbd-traces", NEW, [(0, 65536), (8 << 20, 1 << 20)])
    with Daemon(config) as daemon:
        daemon.wait_for(f"image {NEW} prewarmed (published)", timeout=30)
        republish(daemon, path, NEW)
        line = daemon.wait_for(f"image {NEW} prewarmed (published)", timeout=30)
        assert ": traced, 1.1 of 1.1 MiB read" in line and "1 recorded boot" in line, line
        resident = fincore(path)
        # the traced ranges, what the store read to list the kernels, and readahead: not the image
        assert (1 << 20) + 65536 <= resident < path.stat().st_size // 2, resident
