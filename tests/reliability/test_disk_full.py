"""Disk full under the lease store: the state directory is a tiny tmpfs made here, filled
while the DHCP service runs in a namespace. ACKs stop (an ACK is only sent for a lease on
stable storage) with one clear error line, OFFERs go on from memory, nothing already
stored is lost, and the service recovers without a restart once there is room."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.reliability import figures
from tests.reliability.dhcp_flood import __file__ as FLOOD
from tests.support import dhcp_lab as lab
from tests.support.netns import namespaces, veth

DHCP = """  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.50.0.0/21
      pool: "10.50.0.100-10.50.0.199"
      lease_time: 600
"""


def fill(directory) -> int:
    """Write until ENOSPC; returns the bytes written."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as f:
        for _ in range(100000):                      # bounded: 400 MB at most
            try:
                written += f.write(b"\0" * 4096)
            except OSError:
                break
    return written


def test_lease_store_disk_full(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "bsd-rel-tmpfs", str(state)], check=True)
    try:
        with namespaces("rdsrv", "rdcli", "rdflo") as (srv, cli, flo):
            srv.ip("link", "add", "s0", "type", "bridge")
            veth(srv, "sc", cli, "c0")
            veth(srv, "sf", flo, "f0")
            for port in ("sc", "sf"):
                srv.ip("link", "set", port, "master", "s0")
            srv.ip("link", "set", "s0", "up")
            srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
            server = lab.Server(srv, lab.write_config(tmp_path, DHCP), tmp_path / "server.log")
            server.start()
            try:
                before = {f"52:54:00:dd:00:{i:02x}": lab.lease_ip(cli, tmp_path, f"52:54:00:dd:00:{i:02x}")
                          for i in range(1, 4)}
                filled = fill(state)
                # appends fit in the journal's last allocated page for a while: go on until
                # one cannot be stored (bounded)
                while_full = {}
                for i in range(0x10, 0x70):
                    mac = f"52:54:00:dd:00:{i:02x}"
                    while_full[mac] = lab.lease_ip(cli, tmp_path, mac)
                    if while_full[mac] is None:
                        break
                offers = flo.run([sys.executable, FLOOD, "f0", "5", "5"], cwd=lab.ROOT, timeout=30)
                offered = json.loads(offers.stdout.strip().splitlines()[-1])["offers"]
                (state / "filler").unlink()
                after = lab.lease_ip(cli, tmp_path, "52:54:00:dd:00:11")
            finally:
                server.stop()
            log = server.log.read_text()
        from dhcp.journal import list_leases
        stored = {mac: ip for mac, ip, _, _ in list_leases(state / "leases")}
    finally:
        subprocess.run(["umount", str(state)], check=False)
    assert all(before.values()), before
    refused = [mac for mac, ip in while_full.items() if ip is None]
    acked_while_full = {mac: ip for mac, ip in while_full.items() if ip is not None}
    assert refused, "the journal never filled up"
    assert all(stored.get(mac) == ip for mac, ip in acked_while_full.items()), \
        "an ACK was sent for a lease that is not in the journal"
    assert "lease storage failed" in log and "No space left on device" in log, log[-2000:]
    assert "Traceback" not in log
    assert offered == 5, offers.stdout
    assert after is not None, "no recovery once space was back"
    assert all(stored.get(mac) == ip for mac, ip in before.items()), (before, stored)
    assert stored.get("52:54:00:dd:00:11") == after
    figures.record("disk_full", "Disk full under the lease store (256 KiB tmpfs, namespaces)", [
        ("leases stored before", f"{len(before)}, all still in the journal afterwards"),
        ("filled", f"{filled // 1024} KiB written until ENOSPC"),
        ("new clients while full", f"{len(acked_while_full)} ACKed while the journal's last page had room "
                                   f"(all {len(acked_while_full)} found in it afterwards), then no ACK: "
                                   "never an ACK for a lease that is not on disk"),
        ("the error line", next(l for l in log.splitlines() if "lease storage failed" in l).strip()[-110:]),
        ("OFFERs while full (from memory)", f"{offered} of 5 DISCOVERs answered"),
        ("after freeing space", f"next client ACKed ({after}) without a restart")],
        "The directory snapshot and diff cache under a full disk are not covered yet (see the report).")
