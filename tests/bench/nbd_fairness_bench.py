#!/usr/bin/env python3
"""One greedy NBD client must not starve the others (#15, "fair under load").

Ten polite clients (booting kernels: one 4 KiB random read in flight each, 2,000 reads,
tests/bench/storm_client.c, bytes checked) read the same image twice: alone, and while one
greedy client (libnbd, 64 reads of 1 MiB in flight, a fast reader: NBD multi-conn or a laptop
copying the export) reads as fast as the server lets it. bootserverd, nbdkit and nbd-server
in turn (tests/bench/storm_bench.py's servers), on loopback, the image in the page cache;
interleaved repetitions. Reported: the polite clients' request latency p50/p99/max and the time
until the last of them finished, alone and beside the greedy one, and the greedy one's MB/s.
Holds /tmp/bootserverd-bench.lock.

    .venv/bin/python tests/bench/nbd_fairness_bench.py [--reps 2]
"""
from __future__ import annotations

import argparse
import fcntl
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.nbdreader import PipelinedReader  # noqa: E402

_spec = importlib.util.spec_from_file_location("storm_bench", HERE / "storm_bench.py")
storm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(storm)

WORK = Path("/var/tmp/bootserverd-bench/fairness")
IMAGE = WORK / "fair-2026-01-01-000000-amd64.img"
POLITE, READS, GREEDY_DEPTH, GREEDY_SIZE = 10, 2000, 64, 1 << 20


class NoCgroup:
    """storm_bench's servers put themselves in a cgroup; here nothing is throttled or counted."""

    def add(self, pid: int) -> None:
        pass

    def cpu_seconds(self) -> float:
        return 0.0

    kernel_seconds = cpu_seconds


def polite(client: Path, srv, reads: Path, hashes: Path) -> dict:
    return storm.run_one(client, srv, "127.0.0.1", reads, hashes, POLITE, "127.3.0.1", None, NoCgroup(), 120)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    if not IMAGE.exists() or IMAGE.stat().st_size != 256 << 20:
        IMAGE.write_bytes(os.urandom(256 << 20))
    rng = random.Random(3)
    reads, hashes = WORK / "reads.txt", WORK / "hashes.txt"
    reads.write_text("".join(f"{rng.randrange(0, (256 << 20) // 4096) * 4096} 4096\n" for _ in range(READS)))
    client = WORK / "storm_client"
    subprocess.run(["gcc", "-O2", "-o", str(client), str(HERE / "storm_client.c")], check=True, timeout=120)
    subprocess.run([str(client), "hash", str(IMAGE), str(reads), str(hashes)], check=True, timeout=120)
    storm.warm(IMAGE)
    rows: dict[tuple[str, str], list[dict]] = {}
    with open(storm.LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"load {os.getloadavg()[0]:.2f}; {POLITE} polite clients x {READS} 4 KiB reads, one greedy client "
              f"{GREEDY_DEPTH} x {GREEDY_SIZE >> 20} MiB in flight; {a.reps} reps", flush=True)
        for rep in range(a.reps):
            for server in storm.SERVERS:
                srv = server(IMAGE, WORK, "127.0.0.1", None, NoCgroup())
                try:
                    alone = polite(client, srv, reads, hashes)
                    uri = f"nbd://127.0.0.1:{srv.port}/{srv.export}"
                    greedy = PipelinedReader(uri, str(IMAGE), depth=GREEDY_DEPTH, size=GREEDY_SIZE, rcvbuf=0)
                    greedy.start()
                    try:
                        greedy.reads_after(20, timeout=20)          # it has the server busy
                        before, t0 = greedy.reads, time.monotonic()
                        beside = polite(client, srv, reads, hashes)
                        greedy_mbs = (greedy.reads - before) * GREEDY_SIZE / 1e6 / (time.monotonic() - t0)
                    finally:
                        greedy.close()
                    beside["greedy_MBps"] = greedy_mbs
                    beside["greedy_error"] = greedy.error
                finally:
                    srv.stop()
                for kind, r in (("alone", alone), ("beside greedy", beside)):
                    rows.setdefault((srv.label, kind), []).append(r)
                print(f"rep {rep + 1} {srv.label:12} alone: p99 {alone.get('lat_p99_ms', float('nan')):.2f} ms, "
                      f"last {alone.get('done_max_s', float('nan')):.2f} s; beside greedy: p99 "
                      f"{beside.get('lat_p99_ms', float('nan')):.2f} ms, last "
                      f"{beside.get('done_max_s', float('nan')):.2f} s, greedy {greedy_mbs:.0f} MB/s"
                      + (f", errors {beside.get('errors')}" if beside.get("errors") else ""), flush=True)
    print("\n| server | polite clients | latency p50 / p99 / max (ms) | last polite client done | greedy MB/s |")
    print("|---|---|---|---|---|")
    for (label, kind), runs in rows.items():
        def med(key: str, runs=runs) -> float:
            return statistics.median(r.get(key, float("nan")) for r in runs)
        last = med("done_max_s")
        greedy = f"{med('greedy_MBps'):.0f}" if kind != "alone" else "-"
        print(f"| {label} | {kind} | {med('lat_p50_ms'):.2f} / {med('lat_p99_ms'):.2f} / "
              f"{med('lat_max_ms'):.1f} | {last:.2f} s | {greedy} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
