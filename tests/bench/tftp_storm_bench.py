#!/usr/bin/env python3
"""8:00 over TFTP: N PXE ROMs fetch their first-stage loader at once (#15), against
bootserverd, tftpd-hpa and dnsmasq, each with its default limits, in one run.

Each client is a lock-step reader (blksize 1468, one block in flight, 1 s retransmission, 5
retries: a PXE ROM) from its own address 127.1.a.b, all N RRQs sent together by one C
process (tests/bench/tftp_storm.c, epoll: cheaper per packet than the servers). Files: Debian's
undionly.kpxe (BIOS iPXE, 74 KB), then shimx64.efi + grubx64.efi (the signed UEFI chain, 1.0 +
3.8 MB) — the real files where installed, random bytes of their sizes otherwise. Every byte is
checked (FNV-1a). Everything runs in a network namespace made here, so each server can have
port 69 (dnsmasq's TFTP port is fixed) and nothing leaves it.

Reported per server and file: transfers ok/failed, time until the last transfer ended,
per-transfer p50/p90/max, client retransmissions, server CPU seconds (not for tftpd-hpa: it
forks a child per transfer and reaps them unaccounted). Holds /tmp/bootserverd-bench.lock.

    .venv/bin/python tests/bench/tftp_storm_bench.py [--clients 250] [--reps 2]
"""
from __future__ import annotations

import argparse
import fcntl
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from tests.support.netns import Netns  # noqa: E402
from tests.support.procs import end  # noqa: E402

LOCK = "/tmp/bootserverd-bench.lock"
HERE = Path(__file__).resolve().parent
FILES = {"undionly.kpxe": ("/usr/lib/ipxe/undionly.kpxe", 74213),
         "shimx64.efi": ("/usr/lib/shim/shimx64.efi.signed", 1048504),
         "grubx64.efi": ("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", 3843520)}
SCENARIOS = {"undionly.kpxe": ["undionly.kpxe"], "shim+grub": ["shimx64.efi", "grubx64.efi"]}


def fnv64(data: bytes) -> int:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def cpu_seconds(pid: int) -> float:
    """utime + stime + the reaped children's, of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class Ours:
    name = "bootserverd"

    def __init__(self, ns: Netns, root: Path):
        # the TFTP service as the daemon builds it, its limits the config's defaults
        self.proc = ns.popen([sys.executable, "-m", "tests.support.tftp", "--root", str(root), "--port", "69",
                              "--quiet"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"bootserverd TFTP did not start: {line!r}")
        self.pid = self.proc.pid

    def stop(self):
        end(self.proc, 5)


class TftpdHpa:
    name = "tftpd-hpa"

    def __init__(self, ns: Netns, root: Path):
        # Debian's /etc/default/tftpd-hpa: --secure. -L exits at once on Debian 12 (DESIGN.md
        # §8): -l daemonises, so its PID comes from the PID file and it is ended by that PID.
        pidfile = root.parent / "hpa.pid"
        pidfile.unlink(missing_ok=True)
        ns.run(["/usr/sbin/in.tftpd", "-l", "-P", str(pidfile), "-a", "127.0.0.1:69", "-s", str(root)],
               check=True, timeout=10)
        for _ in range(50):
            if pidfile.exists() and pidfile.read_text().strip():
                break
            time.sleep(0.05)
        self.pid = int(pidfile.read_text())

    def stop(self):
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        for _ in range(50):
            if not Path(f"/proc/{self.pid}").exists():
                return
            time.sleep(0.1)


class Dnsmasq:
    def __init__(self, ns: Netns, root: Path, extra: tuple[str, ...] = ()):
        self.name = "dnsmasq" + (f" ({' '.join(extra)})" if extra else " (defaults)")
        self.proc = ns.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
                              f"--tftp-root={root}", "--listen-address=127.0.0.1", "--bind-interfaces",
                              "--user=root", "--group=root", "--quiet-tftp", "--pid-file=", *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid
        time.sleep(0.3)
        if self.proc.poll() is not None:
            raise RuntimeError("dnsmasq exited at once")

    def stop(self):
        end(self.proc, 5)


SERVERS = {"bootserverd": Ours, "tftpd-hpa": TftpdHpa, "dnsmasq": Dnsmasq,
           "dnsmasq-300": lambda ns, root: Dnsmasq(ns, root, ("--tftp-max=300",))}


def storm(ns: Netns, client: Path, name: str, data: bytes, clients: int) -> dict:
    out = ns.run([str(client), "127.0.0.1", "69", name, str(len(data)), f"{fnv64(data):x}", str(clients),
                  "1468", "1000"], timeout=330)
    lines = out.stdout.splitlines()
    times = [float(w[3]) for w in (line.split() for line in lines if line.startswith("client ")) if w[2] == "ok"]
    why = Counter(" ".join(w[5:]) for w in (line.split() for line in lines if line.startswith("client "))
                  if w[2] == "fail")
    summary = lines[-1].split()
    return {"ok": int(summary[2]), "failed": int(summary[4]), "last": float(summary[6]),
            "retransmits": int(summary[8]), "times": times, "why": why}


def cpu_figure(name: str, runs: list[dict]) -> str:
    if name == "tftpd-hpa":
        return "n/a"     # a child per transfer, reaped without accounting (SIGCHLD ignored)
    return f"{statistics.median(r['cpu'] for r in runs):.2f}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=250)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--only", default=",".join(SERVERS))
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tftp-storm-") as tmp, open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = Path(tmp)
        client = tmp / "tftp_storm"
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(client), str(HERE / "tftp_storm.c")], check=True)
        root = tmp / "root"
        root.mkdir()
        for name, (path, size) in FILES.items():
            data = Path(path).read_bytes() if Path(path).exists() else os.urandom(size)
            (root / name).write_bytes(data)
        root.chmod(0o755)
        ns = Netns("tstorm")
        results: dict[tuple[str, str], list[dict]] = {}
        try:
            ns.ip("link", "set", "lo", "up")
            # an address besides loopback: in.tftpd resolves -a with AI_ADDRCONFIG, which finds
            # nothing in a namespace with only lo (it exits with 66)
            ns.ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
            ns.ip("addr", "add", "10.99.0.1/24", "dev", "v0")
            ns.ip("link", "set", "v0", "up")
            ns.ip("link", "set", "v1", "up")
            print(f"machine: nproc {os.cpu_count()}, kernel {platform.release()}, load {os.getloadavg()[0]:.2f}; "
                  f"{a.clients} clients, lock-step blksize 1468, {a.reps} reps interleaved", flush=True)
            for rep in range(a.reps):
                for key in a.only.split(","):
                    server = SERVERS[key](ns, root)
                    try:
                        for scenario, names in SCENARIOS.items():
                            before = cpu_seconds(server.pid)
                            parts = [storm(ns, client, n, (root / n).read_bytes(), a.clients) for n in names]
                            run = {"ok": min(p["ok"] for p in parts), "failed": max(p["failed"] for p in parts),
                                   "last": sum(p["last"] for p in parts),
                                   "retransmits": sum(p["retransmits"] for p in parts),
                                   "times": [sum(t) for t in zip(*(p["times"] for p in parts))] if all(
                                       len(p["times"]) == len(parts[0]["times"]) for p in parts) else parts[-1]["times"],
                                   "cpu": cpu_seconds(server.pid) - before,
                                   "why": sum((p["why"] for p in parts), Counter())}
                            results.setdefault((server.name, scenario), []).append(run)
                            print(f"rep {rep + 1} {server.name:24} {scenario:14} ok {run['ok']:4} failed {run['failed']:4} "
                                  f"last {run['last']:7.2f} s  retransmits {run['retransmits']:6}  "
                                  f"cpu {run['cpu']:6.2f} s" + (f"  failures: {dict(run['why'])}" if run["why"] else ""),
                                  flush=True)
                    finally:
                        server.stop()
        finally:
            ns.delete()
        print(f"\n| server | files | ok / {a.clients} (worst rep) | time to last (median) | per transfer p50 / p90 / max "
              f"| retransmits | server CPU s |")
        print("|---|---|---|---|---|---|---|")
        best: dict[str, float] = {}
        for (name, scenario), runs in results.items():
            last = statistics.median(r["last"] for r in runs)
            times = [t for r in runs for t in r["times"]]
            print(f"| {name} | {scenario} | {min(r['ok'] for r in runs)} | {last:.2f} s | "
                  f"{pct(times, 0.5):.2f} / {pct(times, 0.9):.2f} / {max(times, default=float('nan')):.2f} s | "
                  f"{statistics.median(r['retransmits'] for r in runs):.0f} | "
                  f"{cpu_figure(name, runs)} |")
            if name != "bootserverd" and min(r["ok"] for r in runs) == a.clients:
                best[scenario] = min(best.get(scenario, float("inf")), last)
        for scenario in SCENARIOS:
            ours = results.get(("bootserverd", scenario))
            if ours and scenario in best:
                print(f"{scenario}: bootserverd / best C server that completed all: "
                      f"{statistics.median(r['last'] for r in ours) / best[scenario]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
