#!/usr/bin/env python3
"""The 8:00 storm while laptops update (#15): "laptop updates never slow a boot".

    sudo .venv/bin/python tests/bench/storm_laptops_bench.py [--clients 60] [--laptops 20]
        [--rounds 2] [--rate 40MB/s] [--trace debian|desktop|FILE] [--image FILE] [--profile DIR]

The WHOLE daemon (``python -m bootserverd run``, NBD and HTTP on, the image published by its
store) serves the storm of tests/bench/storm_bench.py (N NBD clients from 127.1.0.1 + i, one
burst, the trace replayed, bytes checked; warm), three ways, interleaved, rotated each round:

  alone      the storm only (daemon A: http.update_rate = --rate, the default 40MB/s)
  laptops    the storm while --laptops curl processes, each from its own address (127.2.0.1 + i,
             ``--interface``), download the same image from A's /images/<name>.img (each one
             fetches it over and over on one connection until killed); started 1 s before the
             burst, killed by PID after it
  unlimited  the same against daemon B (http.update_rate: 0, no limit)
  rate2      (--ways) as laptops, against daemon C (http.update_rate: --rate2, 20MB/s)
  niced      (--ways) as laptops, the curl processes at nice 19: on this box the laptops' own CPU
             (receiving on loopback) competes with the storm for the same cores; in a school it is
             spent on the laptops

Per run: the storm's time to the last client, request latency p50/p99, the daemon's CPU
seconds (its cpuacct cgroup), the laptops' CPU seconds (theirs), and the laptops' MB/s during
the storm (bytes_acked of the daemon's HTTP sockets, ``ss -ti``, before and after the storm over
the storm's wall time). Holds /tmp/bootserverd-bench.lock; every wait is bounded.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import storm_bench as sb

from nbd.trace import parse
from tests.support.config import write_config
from tests.support.http import PYTHON, REPO
from tests.support.procs import end

LAPTOP_FIRST = "127.2.0.1"


class WholeDaemon:
    """``python -m bootserverd run`` with NBD and HTTP on over ``image`` (hard-linked), its own
    cpuacct cgroup; ``label`` stays "bootserverd" so storm_bench's profiler attaches to it."""
    label = "bootserverd"

    def __init__(self, name: str, image: Path, work: Path, cg: sb.Cgroup, rate: str | None) -> None:
        self.name, self.work = name, work
        work.mkdir()
        (work / "images").mkdir()
        os.link(image, work / "images" / image.name)
        self.export = image.name[:-4]
        self.port, self.http_port = sb.free_port(), sb.free_port()
        http = {"enabled": True, "listen": f"127.0.0.1:{self.http_port}", "max_connections_per_client": 64}
        if rate is not None:
            http["update_rate"] = rate
        # the daemon's defaults otherwise (prewarm included: the image is warmed before every run anyway)
        config = write_config(work, server={"log_level": "info"}, http=http,
                              nbd={"enabled": True, "listen": f"127.0.0.1:{self.port}", "max_connections": 1024})
        self.log = open(work / "daemon.log", "w")  # noqa: SIM115 (closed in stop())
        env = dict(os.environ, BOOTSERVERD_ALLOW_ROOT="1")
        self.proc = subprocess.Popen([PYTHON, "-m", "bootserverd", "run", "-c", str(config)], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.pid = self.proc.pid
        cg.add(self.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon {name} exited:\n{(work / 'daemon.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/status", timeout=5) as r:
                    if any(i.get("name") == self.export for i in json.load(r).get("images", [])):
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"daemon {name}: {self.export} not published in 120 s")
        sb.wait_port("127.0.0.1", self.port, None)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/images/{self.export}.img"

    def http_bytes(self) -> int:
        """Bytes the peers acknowledged on the daemon's HTTP sockets now."""
        r = subprocess.run(["ss", "-Htin", "state", "established", f"sport = :{self.http_port}"],
                           capture_output=True, text=True, timeout=10, check=False)
        return sum(int(x) for x in re.findall(r"bytes_acked:(\d+)", r.stdout))

    def stop(self) -> None:
        end(self.proc, 15)
        self.log.close()


class Laptops:
    """``count`` curl processes, each from its own address, fetching ``url`` again and again."""

    def __init__(self, url: str, count: int, cg: sb.Cgroup, repeats: int = 200, nice: int = 0) -> None:
        first = [int(x) for x in LAPTOP_FIRST.split(".")]
        self.procs = []
        for i in range(count):
            addr = f"{first[0]}.{first[1]}.{first[2]}.{first[3] + i}"
            # no -o: every body goes to stdout, which is /dev/null
            p = subprocess.Popen(["nice", "-n", str(nice), "curl", "-s", "--interface", addr, *([url] * repeats)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            cg.add(p.pid)
            self.procs.append(p)

    def stop(self) -> int:
        """Kill them (by PID); how many had exited on their own before."""
        gone = sum(p.poll() is not None for p in self.procs)
        for p in self.procs:
            end(p, 5)
        return gone


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clients", type=int, default=60)
    ap.add_argument("--laptops", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", default=None, help="daemon A's http.update_rate (default: the daemon's, 40MB/s)")
    ap.add_argument("--rate2", default="20MB/s", help="daemon C's http.update_rate (the way rate2)")
    ap.add_argument("--trace", default="debian")
    ap.add_argument("--image", type=Path)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--lead", type=float, default=1.0, help="seconds the laptops download before the burst")
    ap.add_argument("--ways", default="alone,laptops,unlimited",
                    help="of alone, laptops, unlimited, rate2, niced (laptops at nice 19: their own CPU, which other "
                    "machines would spend, mostly off the two cores the storm and the daemon share)")
    ap.add_argument("--profile", type=Path, help="py-spy on the daemon during every run (storm_bench's)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    trace_path = sb.trace_file(args.trace)
    trace = parse(trace_path.read_text())
    with open(sb.LOCK, "w") as lock:
        print(f"waiting for {sb.LOCK}...", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
        return measure(args, trace_path, trace)


def measure(args, trace_path: Path, trace) -> int:
    image_src = args.image or sb.default_image(args.trace)
    st = os.stat(image_src)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    reads_list = [(r.offset, r.length) for r in trace.reads]
    results: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="storm-laptops-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        image, client, reads, hashes = sb.prepare(work, image_src, reads_list)
        print(f"machine: {sb.machine()}; load average at start {Path('/proc/loadavg').read_text().split()[:3]}",
              flush=True)
        print(f"trace {trace_path.name}: {len(reads_list)} reads; image {image_src} ({st.st_size / 1e6:.0f} MB); "
              f"N={args.clients}, {args.laptops} laptops downloading {image.name} over HTTP", flush=True)
        cgs = {k: sb.Cgroup(k, device) for k in ("daemon-A", "daemon-B", "daemon-C", "laptops")}
        daemons = {}
        try:
            daemons["A"] = WholeDaemon("A", image, work / "A", cgs["daemon-A"], args.rate)
            known = {"alone": ("A", False), "laptops": ("A", True), "unlimited": ("B", True), "niced": ("A", True),
                     "rate2": ("C", True)}
            ways = [(w, *known[w]) for w in args.ways.split(",")]
            if "unlimited" in args.ways.split(","):
                daemons["B"] = WholeDaemon("B", image, work / "B", cgs["daemon-B"], "0")
            if "rate2" in args.ways.split(","):
                daemons["C"] = WholeDaemon("C", image, work / "C", cgs["daemon-C"], args.rate2)
            print(f"daemon A: update_rate {args.rate or 'default (40MB/s)'}"
                  + ("; daemon B: update_rate 0" if "B" in daemons else "")
                  + (f"; daemon C: update_rate {args.rate2}" if "C" in daemons else ""), flush=True)
            for rnd in range(args.rounds):
                for way, which, laptops in ways[rnd % len(ways):] + ways[:rnd % len(ways)]:
                    d = daemons[which]
                    cg = cgs[f"daemon-{which}"]
                    sb.warm(image)
                    lap, lap_cpu0 = None, cgs["laptops"].cpu_seconds()
                    load = Path("/proc/loadavg").read_text().split()[0]
                    if laptops:
                        lap = Laptops(d.url(), args.laptops, cgs["laptops"], nice=19 if way == "niced" else 0)
                        time.sleep(args.lead)
                    spy = sb.start_profile(args.profile, d, way, args.clients)
                    b0, t0 = d.http_bytes(), time.monotonic()
                    try:
                        res = sb.run_one(client, d, "127.0.0.1", reads, hashes, args.clients, "127.1.0.1",
                                         None, cg, args.timeout)
                    finally:
                        wall = time.monotonic() - t0
                        b1 = d.http_bytes()
                        finished = lap.stop() if lap else 0
                        if spy is not None:
                            sb.stop_profile(*spy)
                    res.update(way=way, round=rnd + 1, load=load, wall_s=wall,
                               laptop_mbps=(b1 - b0) / 1e6 / wall if laptops else 0.0,
                               laptop_cpu_s=cgs["laptops"].cpu_seconds() - lap_cpu0, laptops_exited=finished)
                    results.append(res)
                    print(f"round {rnd + 1} {way:9} load {load:>5}  last client {res.get('done_max_s', 0):6.2f} s  "
                          f"p50 {res.get('done_p50_s', 0):5.2f} s  lat p50 {res.get('lat_p50_ms', 0):5.2f} "
                          f"p99 {res.get('lat_p99_ms', 0):6.2f} ms  NBD {res.get('mbps', 0):4.0f} MB/s  "
                          f"laptops {res['laptop_mbps']:6.0f} MB/s  daemon CPU {res['server_cpu_s']:5.2f} s  "
                          f"laptops' CPU {res['laptop_cpu_s']:5.2f} s"
                          + (f"  ({finished} curls had exited)" if finished else "")
                          + (f"  ERRORS {res['errors']}: {res.get('first_error')}" if res.get("errors") else ""),
                          flush=True)
                    time.sleep(1.0)
        finally:
            for d in daemons.values():
                d.stop()
            time.sleep(0.5)
            for cg in cgs.values():
                cg.close()
            for d in (Path(f"/sys/fs/cgroup/cpuacct/{sb.CG}"), Path(f"/sys/fs/cgroup/blkio/{sb.CG}")):
                try:
                    d.rmdir()
                except OSError:
                    pass
    print(f"load average at the end {Path('/proc/loadavg').read_text().split()[:3]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    report(results)
    return 1 if any(r.get("errors") for r in results) else 0


def report(results: list[dict]) -> None:
    med = statistics.median
    agg = {}
    for way in ("alone", "laptops", "niced", "rate2", "unlimited"):
        rs = [r for r in results if r["way"] == way]
        if rs:
            agg[way] = {k: med(r.get(k, 0) for r in rs) for k in
                        ("done_max_s", "lat_p50_ms", "lat_p99_ms", "laptop_mbps", "server_cpu_s", "laptop_cpu_s")}
            agg[way]["runs"] = ", ".join(f"{r.get('done_max_s', 0):.2f}" for r in rs)
    base = agg.get("alone", {}).get("done_max_s")
    print()
    print("| storm N = 60 | last client s (median; runs) | lat p50 ms | p99 ms | laptops MB/s | daemon CPU s "
          "| laptops' CPU s | / alone |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for way, a in agg.items():
        ratio = f"{a['done_max_s'] / base:.2f}" if base and way != "alone" else ""
        print(f"| {way} | {a['done_max_s']:.2f} ({a['runs']}) | {a['lat_p50_ms']:.2f} | {a['lat_p99_ms']:.2f} | "
              f"{a['laptop_mbps']:.0f} | {a['server_cpu_s']:.2f} | {a['laptop_cpu_s']:.2f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
