#!/usr/bin/env python3
"""HTTP benchmark: bootserverd against nginx in one run, plus diff build cost and delta sizes.

    .venv/bin/python tests/bench/http_bench.py [--size MIB] [--runs N] [--keep DIR]

1. Download MB/s of one full image over loopback with curl: bootserverd (sendfile path and
   copy path) and nginx (sendfile on) serving the same file, median of N runs, and the ratio.
2. Diff build (``python -m bootserverd.images.diffs build``: rdiff, block 4096) for a pair of SIZE and
   of SIZE/4 MiB: wall time (linearity) and peak RSS of the builder and its rdiff children.
3. Delta sizes for the pair: ours (rdiff -b 4096), Puavo's baseline (rdiff -b 128), zstd
   --patch-from --long=31, and the changed-files floor (tar of the changed files | zstd -19).
4. The squashfs settings of docs/images.md against mksquashfs defaults: delta size for each.
With ``--zsync``: only the zsync comparison for a pair of SIZE MiB — the control file made by
the daemon (time, size), the bytes the real ``zsync -i old`` client fetches (multi-range
requests) against the image size and the rdiff delta, and the client's wall time.
The measuring part holds /tmp/bootserverd-bench.lock (the machine is shared).
"""
from __future__ import annotations

import argparse
import fcntl
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
from tests.support.http import MKSQUASHFS, PYTHON, Daemon  # noqa: E402
from tests.support.nginx import start_nginx, stop  # noqa: E402

LOCK = "/tmp/bootserverd-bench.lock"
OLD, NEW = "bench-2026-01-01-000000-amd64", "bench-2026-02-01-000000-amd64"


def make_tree(root: Path, total: int, seed: int) -> list[Path]:
    """Files of 4 KiB..4 MiB, half random, half compressible: 2 × ``total`` bytes of files,
    so that the squashfs image is about ``total`` bytes."""
    total *= 2
    rng = random.Random(seed)
    (root / "boot").mkdir(parents=True)
    (root / "boot" / "vmlinuz-6.1.0-bench").write_bytes(os.urandom(8 << 20))
    (root / "boot" / "initrd.img-6.1.0-bench").write_bytes(os.urandom(16 << 20))
    os.symlink("vmlinuz-6.1.0-bench", root / "boot" / "vmlinuz")
    os.symlink("initrd.img-6.1.0-bench", root / "boot" / "initrd.img")
    files, made, index = [], 24 << 20, 0
    while made < total:
        size = min(int(rng.lognormvariate(11, 1.5)) + 4096, 4 << 20)
        path = root / "usr" / f"d{index % 64:02}" / f"f{index:06}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(size))
        files.append(path)
        made += size
        index += 1
    return files


def _content(size: int) -> bytes:
    half = size // 2
    pattern = os.urandom(512)
    return os.urandom(half) + (pattern * (size // 512 + 1))[:size - half]


def change_tree(files: list[Path], root: Path, seed: int, fraction: float = 0.03) -> list[Path]:
    """An update: rewrite ~3% of the files, add a few; returns the new/changed files."""
    rng = random.Random(seed)
    changed = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in changed:
        path.write_bytes(_content(path.stat().st_size))
    for i in range(10):
        extra = root / "usr" / "new" / f"n{i}"
        extra.parent.mkdir(parents=True, exist_ok=True)
        extra.write_bytes(_content(256 << 10))
        changed.append(extra)
    return changed


def squash(tree: Path, out: Path, friendly: bool = True) -> None:
    args = MKSQUASHFS if friendly else ["-noappend", "-quiet", "-no-progress"]
    subprocess.run(["mksquashfs", str(tree), str(out), *args], check=True)


def build_pair(work: Path, images: Path, size: int, friendly: bool = True, tag: str = "") -> list[Path]:
    tree = work / f"tree{tag}"
    files = make_tree(tree, size, seed=1)
    squash(tree, images / f"{OLD}{tag}.img", friendly)
    changed = change_tree(files, tree, seed=2)
    squash(tree, images / f"{NEW}{tag}.img", friendly)
    floor = work / f"floor{tag}.tar.zst"
    rel = [str(p.relative_to(tree)) for p in changed]
    tar = subprocess.Popen(["tar", "-C", str(tree), "-cf", "-", *rel], stdout=subprocess.PIPE)
    with open(floor, "wb") as out:
        subprocess.run(["zstd", "-19", "-T0", "-q", "-c"], stdin=tar.stdout, stdout=out, check=True)
    tar.wait()
    shutil.rmtree(tree)
    return [images / f"{OLD}{tag}.img", images / f"{NEW}{tag}.img", floor]


# -- measurements ---------------------------------------------------------------------------
def curl_rate(url: str) -> float:
    out = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{speed_download} %{size_download}", url],
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    return float(out[0]) / 1e6


def diff_build(old: Path, new: Path, out: Path, block: int = 4096) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB of the builder and its rdiff children, delta bytes), in a fresh
    process so RUSAGE_CHILDREN covers only this build."""
    code = ("import resource, subprocess, sys, time; t = time.monotonic(); "
            "subprocess.run(sys.argv[1:], check=True); "
            "print(time.monotonic() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    args = [PYTHON, "-c", code, PYTHON, "-m", "bootserverd.images.diffs", "build", "--block-size", str(block),
            "--nice", "0", str(old), str(new), str(out)]
    seconds, rss = subprocess.run(args, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return float(seconds), int(rss) / 1024, out.stat().st_size


def rdiff_delta(old: Path, new: Path, work: Path, block: int) -> tuple[int, float]:
    sig, delta = work / f"sig{block}", work / f"delta{block}"
    t = time.monotonic()
    subprocess.run(["rdiff", "-b", str(block), "signature", str(old), str(sig)], check=True)
    subprocess.run(["rdiff", "delta", str(sig), str(new), str(delta)], check=True)
    seconds = time.monotonic() - t
    size = delta.stat().st_size
    sig.unlink()
    delta.unlink()
    return size, seconds


def zstd_patch(old: Path, new: Path, work: Path) -> tuple[int, float]:
    out = work / "patch.zst"
    t = time.monotonic()
    subprocess.run(["zstd", "-q", "-f", "-T0", f"--patch-from={old}", "--long=31", str(new), "-o", str(out)],
                   check=True)
    seconds = time.monotonic() - t
    size = out.stat().st_size
    out.unlink()
    return size, seconds


def zsync_figures(work: Path, images: Path, old: Path, new: Path) -> None:
    import re
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        daemon = Daemon(work / "zsync-d", images, expect_images=2, http_extra="  update_rate: 0\n")
        try:
            t = time.monotonic()
            status = 0
            while status != 200 and time.monotonic() - t < 600:
                status, _, control = daemon.get(f"/images/{NEW}.img.zsync")
                time.sleep(0.05)
            made = time.monotonic() - t
            out = work / "zsync-out.img"
            t = time.monotonic()
            got = subprocess.run(["zsync", "-i", str(old), "-o", str(out), daemon.url(f"/images/{NEW}.img.zsync")],
                                 cwd=work, capture_output=True, text=True, timeout=1200)
            client = time.monotonic() - t
            fetched = int(re.search(r"fetched (\d+)", got.stdout + got.stderr)[1])
            same = subprocess.run(["cmp", "-s", str(out), str(new)]).returncode == 0
        finally:
            daemon.stop()
    delta, _ = rdiff_delta(old, new, work, 4096)
    size = new.stat().st_size
    print(f"\n## zsync against rdiff, {size >> 20} MiB pair (3% of files rewritten, 10 added)")
    print(f"  control file: {len(control) >> 10} KiB ({100 * len(control) / size:.2f}% of the image), "
          f"made by the daemon in {made:.1f} s (niced worker)")
    print(f"  zsync -i old: fetched {fetched >> 10} KiB = {100 * fetched / size:.1f}% of the image, "
          f"{fetched / delta:.2f}x the rdiff delta ({delta >> 10} KiB); {client:.1f} s; "
          f"result {'identical' if same else 'DIFFERENT'}")
    print(f"  zsync total (control + fetched): {(fetched + len(control)) >> 10} KiB; "
          f"rdiff delta + nothing else: {delta >> 10} KiB")


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"nproc {os.cpu_count()}, CPU {cpu}, kernel {os.uname().release}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=1024, help="image size in MiB (default 1024)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--compare-size", type=int, default=256, help="MiB for the squashfs settings comparison")
    ap.add_argument("--keep", type=Path, help="work directory to keep (default: a temporary one)")
    ap.add_argument("--zsync", action="store_true", help="only the zsync comparison (docs/benchmarks.md)")
    a = ap.parse_args()
    work = a.keep or Path(tempfile.mkdtemp(prefix="http-bench-", dir="/var/tmp"))
    images = work / "images"
    images.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()} (shared with other engineers' tests)")
    if a.zsync:
        old, new, _ = build_pair(work, images, a.size << 20)
        try:
            zsync_figures(work, images, old, new)
        finally:
            if not a.keep:
                shutil.rmtree(work, ignore_errors=True)
        return 0
    t = time.monotonic()
    old, new, floor = build_pair(work, images, a.size << 20)
    (work / "small").mkdir(exist_ok=True)
    (work / "default").mkdir(exist_ok=True)
    small = build_pair(work / "small", work / "small", a.compare_size << 20, tag="-small")
    default_pair = build_pair(work / "default", work / "default", a.compare_size << 20, friendly=False,
                              tag="-default")
    print(f"built images in {time.monotonic() - t:.0f} s: {old.stat().st_size >> 20} MiB")
    daemon = copy = nginx = None
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # raw speed against nginx: without the updates' share (http.update_rate)
            daemon = Daemon(work / "ours", images, expect_images=2, http_extra="  update_rate: 0\n")
            copy = Daemon(work / "ours-copy", images, expect_images=2,
                          http_extra="  sendfile: false\n  update_rate: 0\n")
            nginx, nport = start_nginx(images, work)
            urls = {"bootserverd (sendfile)": daemon.url(f"/images/{NEW}.img"),
                    "bootserverd (copy path)": copy.url(f"/images/{NEW}.img"),
                    "nginx 1.22 (sendfile)": f"http://127.0.0.1:{nport}/{NEW}.img"}
            for url in urls.values():
                curl_rate(url)                                      # warm the page cache
            rates = {name: [] for name in urls}
            for _ in range(a.runs):
                for name, url in urls.items():
                    rates[name].append(curl_rate(url))
            medians = {name: statistics.median(v) for name, v in rates.items()}
            print(f"\n## Full-image download, {new.stat().st_size >> 20} MiB over loopback, curl, median of {a.runs}")
            for name, value in medians.items():
                print(f"  {name:26} {value:8.0f} MB/s   runs: {', '.join(f'{v:.0f}' for v in rates[name])}")
            ratio = medians["bootserverd (sendfile)"] / medians["nginx 1.22 (sendfile)"]
            print(f"  ratio bootserverd/nginx    {ratio:8.2f}   (target ≥ 0.8, and ≥ 1200 MB/s)")
        finally:
            for proc in (nginx,):
                if proc is not None:
                    stop(proc)
            for d in (daemon, copy):
                if d is not None:
                    d.stop()
        print("\n## Diff build (python -m bootserverd.images.diffs build, rdiff block 4096, not niced)")
        builds = {}
        pairs = [("full", old, new)] + ([("small", small[0], small[1])] if small else [])
        for label, o, n in pairs:
            seconds, rss, size = diff_build(o, n, work / f"built-{label}.rdiff")
            builds[label] = (o.stat().st_size, seconds)
            print(f"  {n.stat().st_size >> 20:5} MiB pair: {seconds:6.1f} s, peak RSS {rss:5.0f} MiB, delta {size >> 10} KiB")
        if small:
            (s1, t1), (s2, t2) = builds["full"], builds["small"]
            print(f"  time per GiB: {t1 / s1 * (1 << 30):.1f} s (big) vs {t2 / s2 * (1 << 30):.1f} s (small): "
                  f"{'linear' if abs(t1 / s1 - t2 / s2) / (t2 / s2) < 0.3 else 'NOT linear'}")
        print(f"\n## Delta size for the {new.stat().st_size >> 20} MiB pair (3% of files rewritten, 10 added)")
        floor_size = floor.stat().st_size
        ours, ours_s = rdiff_delta(old, new, work, 4096)
        puavo, puavo_s = rdiff_delta(old, new, work, 128)
        zpatch, zpatch_s = zstd_patch(old, new, work)
        for name, size, seconds in (("rdiff -b 4096 (ours)", ours, ours_s), ("rdiff -b 128 (Puavo)", puavo, puavo_s),
                                    ("zstd --patch-from --long=31", zpatch, zpatch_s),
                                    ("floor: tar changed | zstd -19", floor_size, 0.0)):
            print(f"  {name:31} {size / 1e6:8.2f} MB  {size / floor_size:5.2f}x floor"
                  + (f"  ({seconds:.1f} s)" if seconds else ""))
        if small and default_pair:
            friendly = rdiff_delta(small[0], small[1], work, 4096)[0]
            default = rdiff_delta(default_pair[0], default_pair[1], work, 4096)[0]
            print(f"\n## squashfs settings, {a.compare_size} MiB pair, rdiff -b 4096")
            print(f"  docs/images.md settings: {friendly / 1e6:.2f} MB; mksquashfs defaults: {default / 1e6:.2f} MB "
                  f"({100 * (1 - friendly / default):.1f}% smaller)")
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
