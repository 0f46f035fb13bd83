#!/usr/bin/env python3
"""NBD benchmark: bootserverd's NBD service, nbd-server and nbdkit (file plugin) side by
side in one run, on a 2 GiB image in page cache.

  * nbdcopy NBD -> null:, multi-conn (nbdcopy's default) and --connections=1   (MB/s)
  * boot storm: 32 clients released together, each 128 MiB of random 64-512 KiB reads,
    one request in flight per client (tests/bench/nbd_bench.c)            (MB/s, p50, p99)

Rounds are interleaved (ours, nbd-server, nbdkit, ours, ...) and the median is reported,
because the 2-core machine is shared with other engineers' tests. The measuring part
holds flock /tmp/bootserverd-bench.lock. Exit status 1 only on a failure (wrong data,
a server that did not start), not on a missed target: the figures say that.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.nbd import PEER_CWD, Server, peer_env  # noqa: E402

IMAGE_SIZE = 2 << 30
LOCK = "/tmp/bootserverd-bench.lock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def make_image(path: Path) -> None:
    if not path.exists() or path.stat().st_size != IMAGE_SIZE:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for _ in range(IMAGE_SIZE // (64 << 20)):
                f.write(os.urandom(64 << 20))
        os.replace(tmp, path)
    with open(path, "rb", buffering=0) as f:      # into the page cache
        while f.read(16 << 20):
            pass


class Ours:
    label = "bootserverd"

    def __init__(self, image: Path, work: Path) -> None:
        self.server = Server(image.parent, work / "ours.log", "--quiet", "--max-per-client", "256")
        self.port, self.export = self.server.port, image.name[:-4]

    def stop(self) -> None:
        self.server.stop()


class NbdServer:
    label = "nbd-server"

    def __init__(self, image: Path, work: Path) -> None:
        self.port, self.export = free_port(), "img"
        conf, self.pidfile = work / "nbd-server.conf", work / "nbd-server.pid"
        conf.write_text(f"[generic]\n\tport = {self.port}\n\tlistenaddr = 127.0.0.1\n"
                        f"[img]\n\texportname = {image}\n\treadonly = true\n")
        # nbd-server daemonizes (forking per client, as deployed); we stop it by its pidfile.
        subprocess.run(["nbd-server", "-C", str(conf), "-p", str(self.pidfile)],
                       check=True, timeout=10, capture_output=True)
        wait_port(self.port)

    def stop(self) -> None:
        try:
            os.kill(int(self.pidfile.read_text()), 15)
        except (OSError, ValueError):
            pass


class Nbdkit:
    label = "nbdkit"

    def __init__(self, image: Path, work: Path) -> None:
        self.port, self.export = free_port(), ""
        self.proc = subprocess.Popen(
            ["nbdkit", "-f", "-r", "--exit-with-parent", "-i", "127.0.0.1",
             "-p", str(self.port), "file", str(image)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def nbdcopy(srv, connections: int | None) -> float:
    cmd = ["nbdcopy"] + ([f"--connections={connections}"] if connections else [])
    cmd += [f"nbd://127.0.0.1:{srv.port}/{srv.export}", "null:"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=peer_env(), cwd=PEER_CWD, capture_output=True, text=True,
                       timeout=300)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"nbdcopy against {srv.label}: {r.stderr.strip()}")
    return IMAGE_SIZE / secs / 1e6


def storm(client: Path, srv, image: Path, clients: int, per_client: int, seed: int) -> dict:
    r = subprocess.run([str(client), str(srv.port), srv.export, str(image), str(clients),
                        str(per_client), str(64 << 10), str(512 << 10), str(seed)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"storm against {srv.label} failed: {r.stdout} {r.stderr}")
    return json.loads(r.stdout)


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    return f"nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--per-client-mib", type=int, default=128)
    ap.add_argument("--image", default="/var/tmp/bootserverd-bench/nbd/nbd-2g.img")
    args = ap.parse_args()
    for tool in ("nbdcopy", "nbd-server", "nbdkit", "gcc"):
        if not shutil.which(tool):
            print(f"missing {tool}: install deps/apt/nbd.txt", file=sys.stderr)
            return 1
    image = Path(args.image)
    with tempfile.TemporaryDirectory(prefix="nbd-bench-") as tmp:
        work = Path(tmp)
        client = work / "nbd_bench"
        subprocess.run(["gcc", "-O2", "-pthread", "-o", str(client), str(HERE / "nbd_bench.c")],
                       check=True, timeout=120)
        print(f"preparing {image} ({IMAGE_SIZE >> 20} MiB, page cache)...", flush=True)
        make_image(image)
        servers = []
        with open(LOCK, "w") as lock:
            print(f"waiting for {LOCK}...", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                make_image(image)        # re-warm: another benchmark may have evicted it
                servers = [Ours(image, work), NbdServer(image, work), Nbdkit(image, work)]
                results = {s.label: {"multi": [], "single": [], "storm": []} for s in servers}
                for rnd in range(args.rounds):
                    for s in servers:
                        res = results[s.label]
                        res["multi"].append(nbdcopy(s, None))
                        res["single"].append(nbdcopy(s, 1))
                        res["storm"].append(storm(client, s, image, args.clients,
                                                  args.per_client_mib << 20, rnd + 1))
                        print(f"round {rnd + 1} {s.label}: multi {res['multi'][-1]:.0f} "
                              f"single {res['single'][-1]:.0f} storm "
                              f"{res['storm'][-1]['mbps']:.0f} MB/s "
                              f"p99 {res['storm'][-1]['p99_ms']:.1f} ms", flush=True)
            finally:
                for s in servers:
                    s.stop()
    return report(results, args)


def report(results: dict, args) -> int:
    med = statistics.median
    rows = {}
    for label, r in results.items():
        rows[label] = dict(
            multi=med(r["multi"]), single=med(r["single"]),
            storm=med(x["mbps"] for x in r["storm"]),
            p50=med(x["p50_ms"] for x in r["storm"]), p99=med(x["p99_ms"] for x in r["storm"]))
    print()
    print(f"machine: {machine()}; shared with other engineers' tests (medians of "
          f"{args.rounds} interleaved rounds)")
    print(f"storm: {args.clients} clients x {args.per_client_mib} MiB, random 64-512 KiB reads")
    print("| server | nbdcopy multi-conn MB/s | nbdcopy 1 conn MB/s | storm MB/s | "
          "storm p50 ms | storm p99 ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, r in rows.items():
        print(f"| {label} | {r['multi']:.0f} | {r['single']:.0f} | {r['storm']:.0f} | "
              f"{r['p50']:.2f} | {r['p99']:.2f} |")
    o, n, k = rows["bootserverd"], rows["nbd-server"], rows["nbdkit"]
    checks = [
        ("sequential multi-conn vs nbd-server", o["multi"] / n["multi"], 1.0),
        ("sequential 1 conn vs nbd-server", o["single"] / n["single"], 1.0),
        ("storm MB/s vs nbdkit", o["storm"] / k["storm"], 1.0),
        ("storm p99 nbdkit / ours", k["p99"] / o["p99"], 1.0),
    ]
    print()
    for name, ratio, target in checks:
        print(f"{name}: {ratio:.2f}x (target >= {target:.1f}x) "
              f"{'met' if ratio >= target else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
