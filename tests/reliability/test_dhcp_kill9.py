"""kill -9 of the daemon (`python -m bootserverd run`) at random points during DHCP exchanges,
restarted each time: 0 forgotten ACKs, 0 addresses given to two clients.

Two namespaces joined by a veth pair; the client side is tests/support/dhcp_lab.py's
relay driver (distinct MACs, relayed through giaddr, every ACK fsynced to a file the moment it
arrives, so the record survives whatever happens to the server). Kills are placed at random
ACK counts (plus a random few ms), so they land evenly over the run, inside group commits,
right after a restart, or during the next start's journal load."""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import time
from pathlib import Path

from tests.reliability import figures
from tests.support.dhcp_lab import LAB, ROOT, Daemon, write_config
from tests.support.netns import namespaces, veth

DHCP_YAML = """  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.50.0.0/21
      pool: ["10.50.0.100-10.50.0.150", "10.50.1.0-10.50.7.254"]
      router: 10.50.0.1
      lease_time: 600
"""


def ack_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_kill9_during_dhcp_exchanges(tmp_path):
    exchanges = figures.scale(200, 1000)
    kills_wanted = figures.scale(4, 20)
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    # one random ACK count per equal slice of the first 90 % of the run: spread over it, and
    # the last kill leaves enough exchanges that the clients cannot finish before it lands
    slot = exchanges * 9 // 10 // kills_wanted
    marks = [i * slot + rng.randrange(1, slot) for i in range(kills_wanted)]
    with namespaces("rksrv", "rkcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        cli.ip("addr", "add", "10.50.0.2/21", "dev", "c0")
        config = write_config(tmp_path, DHCP_YAML)
        daemon = Daemon(srv, config, tmp_path / "daemon.log")
        daemon.start()
        acks = tmp_path / "acks.txt"
        driver = cli.popen([*LAB, "relay-driver", "10.50.0.1", "10.50.0.2",
                            str(exchanges), str(figures.scale(60, 150)), str(acks), "250"],
                           stdout=subprocess.PIPE, text=True, cwd=ROOT)
        restarts: list[float] = []
        try:
            deadline = time.monotonic() + figures.scale(45, 120)
            for mark in marks:
                while driver.poll() is None and ack_count(acks) < mark and \
                        time.monotonic() < deadline:
                    time.sleep(0.005)
                if driver.poll() is not None or time.monotonic() >= deadline:
                    break
                time.sleep(rng.uniform(0, 0.03))   # somewhere inside a group commit, or not
                daemon.kill9()
                restarts.append(daemon.start())
            out, _ = driver.communicate(timeout=figures.scale(60, 150))
            summary = json.loads(out.strip().splitlines()[-1])
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
            daemon.kill9()
        # what the server remembers: one more start reads the journal as left by the last kill
        daemon.start()
        daemon.kill9()
    from dhcp.journal import list_leases
    records = [tuple(line.split()) for line in acks.read_text().splitlines() if line.strip()]
    holders: dict[str, set[str]] = {}
    for mac, ip in records:
        holders.setdefault(ip, set()).add(mac)
    duplicates = sum(1 for macs in holders.values() if len(macs) > 1)
    remembered = {(mac, ip) for mac, ip, _, _ in list_leases(tmp_path / "state" / "leases")}
    forgotten = set(records) - remembered
    log = (tmp_path / "daemon.log").read_text()
    figures.record("dhcp_kill9", "kill -9 of the daemon during DHCP exchanges (namespaces)", [
        ("kills (then restart)", f"{len(restarts)} at random ACK counts (seed {seed})"),
        ("exchanges", f"{exchanges} clients, relayed DISCOVER/OFFER/REQUEST/ACK, retried "
                      f"while the server is down"),
        ("ACKs received by clients", f"{len(records)} ({len(set(records))} distinct leases)"),
        ("forgotten ACKs", len(forgotten)),
        ("addresses ACKed to two clients", duplicates),
        ("restart (exec → :67 open)", f"median {statistics.median(restarts):.2f} s, "
                                      f"max {max(restarts):.2f} s" if restarts else "-"),
    ], "An ACK counts once the client has it (the driver fsyncs each on arrival); the server "
       "writes and fsyncs the lease before sending it (group commit), so no kill can lose one.")
    assert summary == {"acked": exchanges, "left": 0}, summary
    assert len(restarts) == kills_wanted, (len(restarts), marks)
    assert duplicates == 0, {ip: m for ip, m in holders.items() if len(m) > 1}
    assert not forgotten, f"{len(forgotten)} ACKed leases forgotten, e.g. {sorted(forgotten)[:3]}"
    assert "Traceback" not in log
