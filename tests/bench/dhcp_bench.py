#!/usr/bin/env python3
"""DHCP benchmark: perfdhcp (as a relay) against bootserverd, kea-dhcp4 (memfile) and dnsmasq,
side by side in one run, in two namespaces joined by a veth pair. Also measures the two
lease-storage candidates (append-only journal vs SQLite WAL) that dhcp.journal chose
between. Takes /tmp/bootserverd-bench.lock itself: the machine is shared.

  sudo .venv/bin/python tests/bench/dhcp_bench.py [--seconds 10] [--rates 100,1000,5000]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.dhcp_lab import LAB  # noqa: E402
from tests.support.netns import namespaces, veth  # noqa: E402

SERVER_IP, RELAY_IP = "10.80.0.1", "10.80.0.2"
POOL = ("10.80.1.0", "10.81.255.254")


def machine() -> str:
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    return f"nproc {os.cpu_count()}, CPU {cpu}, kernel {platform.release()}"


def wait_port(ns, port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        out = ns.run(["ss", "-Hlun", f"sport = :{port}"]).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on udp {port}")


def start_ours(ns, tmp: Path):
    (tmp / "images").mkdir()
    (tmp / "inv.yaml").write_text("devices: []\n")
    config = tmp / "bootserverd.yaml"
    config.write_text(f"""
server: {{address: {SERVER_IP}, state_dir: {tmp / 'state'}, log_level: warn}}
images: {{dir: {tmp / 'images'}}}
tftp: {{enabled: false}}
nbd: {{enabled: false}}
http: {{enabled: false}}
inventory: {{source: yaml, file: {tmp / 'inv.yaml'}}}
dhcp:
  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.80.0.0/15
      pool: {POOL[0]}-{POOL[1]}
      router: {SERVER_IP}
      lease_time: 3600
""")
    proc = ns.popen([*LAB, "serve", str(config)], cwd=ROOT,
                    stdout=subprocess.PIPE, stderr=open(tmp / "server.log", "w"), text=True)
    if proc.stdout.readline().strip() != "READY":
        raise RuntimeError((tmp / "server.log").read_text())
    return proc


def start_kea(ns, tmp: Path):
    conf = {"Dhcp4": {
        "interfaces-config": {"interfaces": ["s0"], "dhcp-socket-type": "udp"},
        "lease-database": {"type": "memfile", "persist": True, "name": str(tmp / "kea.csv"),
                           "lfc-interval": 0},
        "valid-lifetime": 3600,
        "subnet4": [{"id": 1, "subnet": "10.80.0.0/15", "pools": [{"pool": f"{POOL[0]} - {POOL[1]}"}],
                     "option-data": [{"name": "routers", "data": SERVER_IP}]}],
        "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                     "output_options": [{"output": str(tmp / "kea.log")}]}]}}
    (tmp / "kea.json").write_text(json.dumps(conf))
    env = {**os.environ, "KEA_PIDFILE_DIR": str(tmp), "KEA_LOCKFILE_DIR": "none"}
    proc = ns.popen(["kea-dhcp4", "-c", str(tmp / "kea.json")], env=env,
                    stdout=subprocess.DEVNULL, stderr=open(tmp / "kea.err", "w"))
    wait_port(ns, 67)
    return proc


def start_dnsmasq(ns, tmp: Path):
    proc = ns.popen(["dnsmasq", "--no-daemon", "--port=0", "--conf-file=/dev/null",
                     "--interface=s0", "--bind-interfaces", "--dhcp-lease-max=1000000",
                     "--no-ping",  # its default ICMP probe (3 s per new address) is off, like ours
                     f"--dhcp-range={POOL[0]},{POOL[1]},255.254.0.0,1h",
                     f"--dhcp-leasefile={tmp / 'dnsmasq.leases'}", f"--pid-file={tmp / 'dnsmasq.pid'}"],
                    stdout=subprocess.DEVNULL, stderr=open(tmp / "dnsmasq.err", "w"))
    wait_port(ns, 67)
    return proc


SERVERS = {"bootserverd": start_ours, "kea-dhcp4": start_kea, "dnsmasq": start_dnsmasq}


def perfdhcp(ns, rate: int, seconds: int) -> dict:
    r = ns.run(["perfdhcp", "-4", "-l", RELAY_IP, "-r", str(rate), "-p", str(seconds),
                "-R", "1000000", "-W", "1000000", SERVER_IP], timeout=seconds + 30)
    text = r.stdout
    sent = [int(x) for x in re.findall(r"sent packets: (\d+)", text)]
    recv = [int(x) for x in re.findall(r"received packets: (\d+)", text)]
    drops = [int(x) for x in re.findall(r"drops: (\d+)", text)]
    m = re.search(r"Rate: ([\d.]+) 4-way exchanges/second", text)
    return {"rate": float(m.group(1)) if m else 0.0, "sent": sent, "received": recv,
            "drops": drops, "raw": text if not m else ""}


@contextlib.contextmanager
def served(start):
    """(relay namespace, temp dir): a server started by ``start`` in a namespace of its own,
    joined to the relay's by a veth pair; stopped (its PID) and both deleted afterwards."""
    with namespaces("bsrv", "bcli") as (srv, cli), tempfile.TemporaryDirectory(dir="/var/tmp") as tmpdir:
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", f"{SERVER_IP}/24", "dev", "s0")
        cli.ip("addr", "add", f"{RELAY_IP}/24", "dev", "c0")
        proc = start(srv, Path(tmpdir))
        try:
            time.sleep(0.3)
            yield cli, Path(tmpdir)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def bench_protocols(seconds: int, rates: list[int]) -> list[dict]:
    results = []
    for rate in rates:
        for name, start in SERVERS.items():
            with served(start) as (cli, _):
                res = perfdhcp(cli, rate, seconds)
            res.update(server=name, offered=rate)
            results.append(res)
            d = res["drops"]
            print(f"{rate:>5}/s offered  {name:<12} {res['rate']:8.1f} exchanges/s  "
                  f"drops DISCOVER-OFFER {d[0] if d else '?'} REQUEST-ACK "
                  f"{d[1] if len(d) > 1 else '?'}", flush=True)
            if res["raw"]:
                print(res["raw"][-800:])
    return results


def bench_storage(n: int = 20000) -> None:
    from dhcp.journal import LeaseDB
    from dhcp.leases import Lease
    leases = [Lease(IPv4Address(0x0A000000 + i), b"\x01" + i.to_bytes(6, "big"),
                    "02:00:00:%02x:%02x:%02x" % (i >> 16 & 255, i >> 8 & 255, i & 255), f"h{i}",
                    2e9, "bound") for i in range(n)]
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        for batch in (1, 50):
            path = Path(d) / f"j{batch}"
            db = LeaseDB(path)
            db.load()
            t, c = time.perf_counter(), time.process_time()
            for i in range(0, n, batch):
                db.append(leases[i:i + batch])
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            db.close()
            t = time.perf_counter()
            LeaseDB(path).load()
            load = time.perf_counter() - t
            print(f"storage journal   batch {batch:>2}: {n / wall:8.0f} leases/s, "
                  f"{1e6 * cpu / n:5.1f} µs CPU/lease, load {n} in {load:.3f} s")
            con = sqlite3.connect(str(Path(d) / f"s{batch}.db"), isolation_level=None)
            con.execute("pragma journal_mode=wal")
            con.execute("pragma synchronous=full")
            con.execute("create table leases(ip text primary key, key blob, mac text,"
                        " hostname text, expiry real, state text)")
            t, c = time.perf_counter(), time.process_time()
            for i in range(0, n, batch):
                con.execute("begin")
                con.executemany("insert or replace into leases values (?,?,?,?,?,?)",
                                [(str(l.ip), l.key, l.mac, l.hostname, l.expiry, l.state)
                                 for l in leases[i:i + batch]])
                con.execute("commit")
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            con.close()
            t = time.perf_counter()
            con = sqlite3.connect(str(Path(d) / f"s{batch}.db"))
            rows = [Lease(IPv4Address(r[0]), r[1], r[2], r[3], r[4], r[5])
                    for r in con.execute("select * from leases")]
            con.close()
            load = time.perf_counter() - t
            print(f"storage sqlite-wal batch {batch:>2}: {n / wall:8.0f} leases/s, "
                  f"{1e6 * cpu / n:5.1f} µs CPU/lease, load {len(rows)} in {load:.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rates", default="100,1000,5000")
    ap.add_argument("--no-storage", action="store_true")
    args = ap.parse_args()
    for tool in ("perfdhcp", "kea-dhcp4", "dnsmasq", "ss"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing (deps/apt/dhcp.txt)")
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        print(f"machine: {machine()} (shared with other engineers' tests)", flush=True)
        if not args.no_storage:
            bench_storage()
        results = bench_protocols(args.seconds, [int(r) for r in args.rates.split(",")])
    print("\nsummary (4-way exchanges/s; ratio = bootserverd / other):")
    for rate in sorted({r["offered"] for r in results}):
        row = {r["server"]: r for r in results if r["offered"] == rate}
        ours = row["bootserverd"]["rate"]
        parts = [f"{name} {r['rate']:.0f}" for name, r in row.items()]
        ratios = [f"vs {name} {ours / r['rate']:.2f}x" for name, r in row.items()
                  if name != "bootserverd" and r["rate"]]
        print(f"  {rate:>5}/s: " + ", ".join(parts) + "; " + ", ".join(ratios))


if __name__ == "__main__":
    main()
