#!/usr/bin/env python3
"""8:00 behind a relay (#15): N PCs, three DHCP conversations each (firmware, iPXE, initramfs;
tests/bench/dhcp_classroom.py drives them as the relay), against bootserverd, kea-dhcp4
(memfile) and dnsmasq in one run, each in a server namespace joined by a veth to the relay's
(the servers as tests/bench/dhcp_bench.py starts them). Holds /tmp/bootserverd-bench.lock.

Reported per server: conversations that ended in an ACK (of 3 N), clients that got the same
address all three times, addresses given to two clients (must be 0), OFFER latency from the
first DISCOVER p50/p99/max (retransmissions included), time until the last ACK.

    .venv/bin/python tests/bench/dhcp_classroom_bench.py [--clients 500] [--reps 2]
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.util
import json
import os
import statistics
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

LOCK = "/tmp/bootserverd-bench.lock"
_spec = importlib.util.spec_from_file_location("dhcp_bench", HERE / "dhcp_bench.py")
dhcp_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dhcp_bench)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else float("nan")


def run_once(name: str, start, clients: int) -> dict:
    with dhcp_bench.served(start) as (rel, tmp):
        out = tmp / "out.json"
        rel.run([sys.executable, str(HERE / "dhcp_classroom.py"), dhcp_bench.RELAY_IP, dhcp_bench.SERVER_IP,
                 str(clients), str(out)], timeout=120, check=True)
        record = json.loads(out.read_text())
    convs = record["conversations"]
    acked = [c for c in convs if c["ok"]]
    by_mac: dict[str, set] = defaultdict(set)
    holders: dict[str, set] = defaultdict(set)
    for c in acked:
        by_mac[c["mac"]].add(c["address"])
        holders[c["address"]].add(c["mac"])
    same = sum(1 for mac, addrs in by_mac.items() if len(addrs) == 1 and
               sum(1 for c in acked if c["mac"] == mac) == 3)
    latencies = [c["offer_latency"] for c in convs if c["offer_latency"] is not None]
    return {"server": name, "acked": len(acked), "same_address_3x": same,
            "shared": sum(1 for macs in holders.values() if len(macs) > 1),
            "p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "max": max(latencies, default=float("nan")),
            "retransmits": sum(c["retransmits"] for c in convs), "seconds": record["seconds"]}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=500)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    results: dict[str, list[dict]] = defaultdict(list)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"machine: {dhcp_bench.machine()}, load {os.getloadavg()[0]:.2f}; {a.clients} clients x 3 "
              f"conversations through a relay, {a.reps} reps interleaved", flush=True)
        for rep in range(a.reps):
            for name, start in dhcp_bench.SERVERS.items():
                r = run_once(name, start, a.clients)
                results[name].append(r)
                print(f"rep {rep + 1} {name:12} acked {r['acked']}/{3 * a.clients} same-address {r['same_address_3x']} "
                      f"shared {r['shared']} OFFER p50 {r['p50'] * 1e3:.1f} ms p99 {r['p99'] * 1e3:.1f} ms "
                      f"max {r['max'] * 1e3:.0f} ms retransmits {r['retransmits']} in {r['seconds']:.1f} s", flush=True)
    print(f"\n| server | ACKed of {3 * a.clients} (worst) | same address 3x (worst) | address shared | "
          f"OFFER p50 / p99 / max (median of reps) | retransmissions | all done in |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        def med(key: str, runs=runs) -> float:
            return statistics.median(r[key] for r in runs)
        print(f"| {name} | {min(r['acked'] for r in runs)} | {min(r['same_address_3x'] for r in runs)} | "
              f"{max(r['shared'] for r in runs)} | {med('p50') * 1e3:.1f} / {med('p99') * 1e3:.1f} / "
              f"{med('max') * 1e3:.0f} ms | {med('retransmits'):.0f} | {med('seconds'):.1f} s |")
    ours, others = results.get("bootserverd"), [n for n in results if n != "bootserverd"]
    if ours and others:
        best = min(statistics.median(r["p99"] for r in results[n]) for n in others)
        print(f"OFFER p99: bootserverd / best of Kea and dnsmasq: {statistics.median(r['p99'] for r in ours) / best:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
