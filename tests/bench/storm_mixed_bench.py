#!/usr/bin/env python3
"""Two classrooms boot at 8:00, one from an image in memory and one from an image that is not
(#15: the send threads' before and after).

    sudo .venv/bin/python tests/bench/storm_mixed_bench.py [--clients 60] [--rounds 2]

Image A is the trace's image, read into the page cache; image B is a byte copy of it (its own
pages), evicted. Each server serves both from one directory. Per round and server, in turn:

  alone   N/2 clients boot A, nobody else;
  mixed   N/2 clients boot A and N/2 boot B, all connecting in one burst, the server's cgroup
          throttled to the emulated spinning disk of storm_bench.py (150 reads/s, 100 MB/s).

A's clients need nothing from the disk: what the mixed storm adds to their time is what B's disk
reads cost them. Servers: bootserverd (nbd.send_threads at its default), bootserverd-inline
(nbd.send_threads 0: every reply sent from the event loop, as before the threads), nbdkit
(file plugin, dir=, 16 threads). Same C client as storm_bench.py, bytes checked. Holds
/tmp/bootserverd-bench.lock. Prints a Markdown table (medians over the rounds).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import storm_bench as storm  # noqa: E402
from nbd.trace import parse  # noqa: E402
from tests.support.procs import end  # noqa: E402

HOST = "127.0.0.1"
SOURCES = {"A": "127.1.0.1", "B": "127.1.128.1"}


class Ours(storm.Ours):
    def exports(self, a: Path, b: Path) -> dict[str, str]:
        return {"A": a.name[:-4], "B": b.name[:-4]}


class OursInline(Ours):
    label, options = storm.OursInline.label, storm.OursInline.options


class NbdkitDir:
    """nbdkit's file plugin over the directory: the export name is the file's name."""
    label = "nbdkit"

    def __init__(self, image: Path, work: Path, host: str, ns, cg: storm.Cgroup) -> None:
        self.port = storm.free_port()
        self.proc = subprocess.Popen(["nbdkit", "-f", "-r", "--exit-with-parent", "-i", host, "-p", str(self.port),
                                      "file", f"dir={image.parent}"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        storm.wait_port(host, self.port, None)
        cg.add(self.proc.pid)

    def exports(self, a: Path, b: Path) -> dict[str, str]:
        return {"A": a.name, "B": b.name}

    def stop(self) -> None:
        end(self.proc, 10)


SERVERS = (Ours, OursInline, NbdkitDir)


def storm_of(client: Path, srv, names: dict[str, str], classes: list[str], reads: Path, hashes: Path,
             n: int, timeout: float) -> dict[str, dict]:
    """The classes' clients (n each) connect at once; each class's figures from its client process."""
    procs = {c: subprocess.Popen([str(client), "run", HOST, str(srv.port), names[c], str(reads), str(hashes),
                                  str(n), SOURCES[c], str(timeout)], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for c in classes}
    out = {}
    for c, p in procs.items():
        stdout, stderr = p.communicate(timeout=timeout + 30)
        out[c] = json.loads(stdout) if stdout.strip().startswith("{") else {"errors": n, "first_error": stderr}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=60, help="both classrooms together")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--servers", default="bootserverd,bootserverd-inline,nbdkit")
    ap.add_argument("--trace", default="debian")
    ap.add_argument("--iops", type=int, default=150)
    ap.add_argument("--disk-mbps", type=int, default=100)
    ap.add_argument("--timeout", type=float, default=240)
    args = ap.parse_args()
    trace_path = storm.trace_file(args.trace)
    reads_list = [(r.offset, r.length) for r in parse(trace_path.read_text()).reads]
    chosen = [s for s in SERVERS if s.label in args.servers.split(",")]
    half = args.clients // 2
    with open(storm.LOCK, "w") as lock:
        print(f"waiting for {storm.LOCK}...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory(prefix="storm-mixed-", dir="/var/tmp") as tmp:
            work = Path(tmp)
            image_a, client, reads, hashes = storm.prepare(work, storm.default_image(args.trace), reads_list)
            image_b = image_a.with_name("classroom-b.img")
            shutil.copyfile(image_a, image_b)
            with open(image_b, "rb+") as f:
                os.fsync(f.fileno())            # clean pages: evict() can drop them all
            st = image_a.stat()
            device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
            print(f"machine: {storm.machine()}; load average at start {open('/proc/loadavg').read().split()[:3]}")
            print(f"trace {trace_path.name}: {len(reads_list)} reads; {half} clients per classroom; image "
                  f"{st.st_size / 1e6:.0f} MB twice; disk {args.iops} reads/s, {args.disk_mbps} MB/s", flush=True)
            results = []
            for rnd in range(args.rounds):
                order = chosen[rnd % len(chosen):] + chosen[:rnd % len(chosen)]
                for cls in order:
                    cg = storm.Cgroup(cls.label, device)
                    srv = cls(image_a, work, HOST, None, cg)
                    try:
                        names = srv.exports(image_a, image_b)
                        storm.warm(image_a)
                        alone = storm_of(client, srv, names, ["A"], reads, hashes, half, args.timeout)["A"]
                        storm.warm(image_a)
                        cold_before = storm.evict(image_b)
                        cg.throttle(args.iops, args.disk_mbps * 1_000_000)
                        cpu0 = cg.cpu_seconds()
                        try:
                            mixed = storm_of(client, srv, names, ["A", "B"], reads, hashes, half, args.timeout)
                        finally:
                            cg.throttle(0, 0)
                        cpu = cg.cpu_seconds() - cpu0
                    finally:
                        srv.stop()
                        time.sleep(0.5)
                        cg.close()
                    row = dict(server=cls.label, round=rnd + 1, a_alone=alone.get("done_max_s", 0),
                               a_mixed=mixed["A"].get("done_max_s", 0), b_mixed=mixed["B"].get("done_max_s", 0),
                               a_p99=mixed["A"].get("lat_p99_ms", 0), b_p99=mixed["B"].get("lat_p99_ms", 0),
                               cpu=cpu, b_cached_before=cold_before,
                               errors=alone.get("errors", 0) + mixed["A"].get("errors", 0) + mixed["B"].get("errors", 0))
                    results.append(row)
                    print(f"round {rnd + 1} {cls.label:18} A alone {row['a_alone']:6.2f} s | mixed: A {row['a_mixed']:6.2f} s "
                          f"(p99 {row['a_p99']:.1f} ms), B {row['b_mixed']:6.2f} s (p99 {row['b_p99']:.1f} ms), "
                          f"server CPU {cpu:.2f} s, B cached before {cold_before / 1e6:.0f} MB"
                          + (f"  ERRORS {row['errors']}" if row["errors"] else ""), flush=True)
        for d in (Path(f"/sys/fs/cgroup/cpuacct/{storm.CG}"), Path(f"/sys/fs/cgroup/blkio/{storm.CG}")):
            try:
                d.rmdir()
            except OSError:
                pass
    print()
    print("| server | A alone: last client s | mixed: A last client s | A mixed / alone | A lat p99 ms "
          "| B (from the disk) last client s | B lat p99 ms | server CPU s (mixed) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    med = statistics.median
    for cls in chosen:
        rs = [r for r in results if r["server"] == cls.label]
        m = {k: med(r[k] for r in rs) for k in ("a_alone", "a_mixed", "b_mixed", "a_p99", "b_p99", "cpu")}
        print(f"| {cls.label} | {m['a_alone']:.2f} | {m['a_mixed']:.2f} | {m['a_mixed'] / m['a_alone']:.2f} | "
              f"{m['a_p99']:.1f} | {m['b_mixed']:.2f} | {m['b_p99']:.1f} | {m['cpu']:.2f} |")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
