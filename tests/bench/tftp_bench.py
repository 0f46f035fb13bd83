#!/usr/bin/env python3
"""TFTP benchmark: bootserverd vs tftpd-hpa vs atftpd, side by side in one run, on loopback.

Scenarios (each file checked by sha256 after the timed part):
  lock-step   64 MiB, blksize 1468, curl           (a PXE ROM's way)
  blk8192     64 MiB, blksize 8192, curl
  window16    64 MiB, blksize 1468, windowsize 16, atftp client (tftpd-hpa: lock-step,
              it has no windowsize: the target compares against what it can do)
  32x10MiB    32 concurrent curl transfers of 10 MiB, blksize 1468

Median of --reps runs, servers interleaved within each repetition. Measuring holds /tmp/bootserverd-bench.lock (the box is shared).
tftpd-hpa comes from deps/apt/tftp.txt; atftpd conflicts with it as a package, so its .deb is
fetched with `apt-get download` and unpacked with `dpkg-deb -x` into a private directory.

    .venv/bin/python tests/bench/tftp_bench.py [--reps 3] [--only ours,tftpd-hpa,atftpd]
"""
from __future__ import annotations

import argparse
import fcntl
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.support.files import sha256 as sha  # noqa: E402
from tests.support.procs import end  # noqa: E402
from tests.support.tftp import Server  # noqa: E402

MiB = 1 << 20
LOCK = "/tmp/bootserverd-bench.lock"
ATFTPD_CACHE = Path("/var/tmp/bootserverd-bench/atftpd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_udp(port: int) -> None:
    """Until something answers an RRQ for a missing file on the port (bounded)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        for _ in range(50):
            s.sendto(b"\x00\x01__probe__\x00octet\x00", ("127.0.0.1", port))
            try:
                s.recvfrom(600)
                return
            except socket.timeout:
                continue
    raise RuntimeError(f"no TFTP server answering on {port}")


class Ours:
    name = "bootserverd"

    def __init__(self, root: Path) -> None:
        self.srv = Server(root, "--max-blksize", "65464", "--max-per-client", "64",
                          "--max-transfers", "256", "--quiet")
        self.port = self.srv.port

    def stop(self) -> None:
        self.srv.stop()


class TftpdHpa:
    name = "tftpd-hpa"

    def __init__(self, root: Path) -> None:
        exe = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
        if not os.path.exists(exe):
            raise RuntimeError("in.tftpd missing: install deps/apt/tftp.txt (tftpd-hpa)")
        self.port = free_port()
        self.pidfile = root.parent / "hpa.pid"
        # -L exits at once on Debian 12 (DESIGN.md §8): -l daemonises, so kill by PID file.
        subprocess.run([exe, "-l", "-P", str(self.pidfile), "-a", f"127.0.0.1:{self.port}",
                        "-B", "65464", "-s", str(root)], check=True, timeout=10)
        for _ in range(50):
            if self.pidfile.exists() and self.pidfile.read_text().strip():
                break
            time.sleep(0.05)
        self.pid = int(self.pidfile.read_text())
        wait_udp(self.port)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def atftpd_binary() -> Path:
    exe = ATFTPD_CACHE / "usr" / "sbin" / "atftpd"
    if exe.exists():
        return exe
    ATFTPD_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["apt-get", "download", "atftpd"], cwd=d, check=True, timeout=120,
                       capture_output=True)
        deb = next(Path(d).glob("atftpd_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(ATFTPD_CACHE)], check=True, timeout=60)
    return exe


class Atftpd:
    name = "atftpd"

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(atftpd_binary()), "--daemon", "--no-fork", "--port", str(self.port),
             "--bind-address", "127.0.0.1", "--user", "root", "--group", "root",
             "--maxthread", "256", "--logfile", "/dev/null", str(root)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_udp(self.port)

    def stop(self) -> None:
        end(self.proc, 5)


def curl(port: int, name: str, out: Path, blksize: int) -> list[str]:
    return ["curl", "-sS", "--tftp-blksize", str(blksize), "-o", str(out),
            f"tftp://127.0.0.1:{port}/{name}"]


def atftp(port: int, name: str, out: Path, window: int, blksize: int) -> list[str]:
    return ["atftp", "--option", f"windowsize {window}", "--option", f"blksize {blksize}",
            "-g", "-r", name, "-l", str(out), "127.0.0.1", str(port)]


def timed(cmds: list[list[str]]) -> float:
    t0 = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    try:
        for p in procs:
            p.wait(300)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    dt = time.perf_counter() - t0
    bad = [p.stderr.read().decode() for p in procs if p.returncode != 0]
    if bad:
        raise RuntimeError(f"client failed: {bad[0]}")
    return dt


SCENARIOS = {
    # name: (file, MiB per client, clients, command maker)
    "lock-step 1468": ("f64", 64, 1, lambda p, o: [curl(p, "f64", o[0], 1468)]),
    "blksize 8192": ("f64", 64, 1, lambda p, o: [curl(p, "f64", o[0], 8192)]),
    "windowsize 16": ("f64", 64, 1, lambda p, o: [atftp(p, "f64", o[0], 16, 1468)]),
    "32 x 10 MiB": ("f10", 10, 32, lambda p, o: [curl(p, "f10", x, 1468) for x in o]),
}


def machine() -> str:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"nproc={os.cpu_count()}, CPU {cpu}, kernel {platform.release()}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--only", default="bootserverd,tftpd-hpa,atftpd")
    a = ap.parse_args()
    for tool in ("curl", "atftp", "dpkg-deb", "apt-get"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} missing: install deps/apt/tftp.txt")
    servers = [s for s in (Ours, TftpdHpa, Atftpd) if s.name in a.only.split(",")]
    with tempfile.TemporaryDirectory(prefix="tftp-bench-") as tmp:
        tmp = Path(tmp)
        root, outd = tmp / "root", tmp / "out"
        root.mkdir()
        outd.mkdir()
        os.chmod(tmp, 0o755)
        os.chmod(root, 0o755)
        for name, mib in (("f64", 64), ("f10", 10)):
            with open(root / name, "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MiB))
            os.chmod(root / name, 0o644)
        want = {n: sha(root / n) for n in ("f64", "f10")}
        atftpd_binary() if Atftpd in servers else None   # fetch before taking the lock

        results: dict[str, dict[str, float]] = {}
        best_results: dict[str, dict[str, float]] = {}
        with open(LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            running = []
            try:
                for cls in servers:
                    running.append(cls(root))
                # Interleave servers inside each repetition so load from other users of the
                # machine hits all of them alike; report the median.
                for scen, (fname, mib, n, make) in SCENARIOS.items():
                    times: dict[str, list[float]] = {srv.name: [] for srv in running}
                    for _ in range(a.reps):
                        for srv in running:
                            outs = [outd / f"{srv.name}-{i}" for i in range(n)]
                            times[srv.name].append(timed(make(srv.port, outs)))
                            for o in outs:
                                if sha(o) != want[fname]:
                                    raise RuntimeError(f"{srv.name} {scen}: sha256 mismatch")
                                o.unlink()
                    for srv in running:
                        t = times[srv.name]
                        rate = mib * n * MiB / statistics.median(t) / 1e6
                        best = mib * n * MiB / min(t) / 1e6
                        results.setdefault(scen, {})[srv.name] = rate
                        best_results.setdefault(scen, {})[srv.name] = best
                        print(f"  {srv.name:12} {scen:15} {rate:8.1f} MB/s median, {best:8.1f}"
                              f" best (runs: {', '.join(f'{x:.2f}s' for x in t)})", flush=True)
            finally:
                for srv in running:
                    srv.stop()

    names = [s.name for s in servers]
    print(f"\nTFTP over loopback, MB/s (1e6 B/s), {a.reps} runs each, servers interleaved;"
          f" {machine()}; machine shared with other engineers' tests")
    for title, table in (("median", results), ("best run", best_results)):
        print(f"\n{title}:\n")
        print("| scenario | " + " | ".join(names) + " | ours / tftpd-hpa | ours / atftpd |")
        print("|---|" + "---|" * (len(names) + 2))
        for scen, r in table.items():
            cells = " | ".join(f"{r.get(n, 0):.1f}" for n in names)
            ratio = lambda other: (f"{r['bootserverd'] / r[other]:.2f}x"
                                   if other in r and "bootserverd" in r else "-")
            print(f"| {scen} | {cells} | {ratio('tftpd-hpa')} | {ratio('atftpd')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
