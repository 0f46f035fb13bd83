"""Two boot servers splitting one pool (split scope), in network namespaces made here: A and
B run our DHCP service from one shared config file on a bridge; 200 scripted broadcast
clients (tests/support/dhcp_pair.py) get leases while A is killed (kill -9, its PID) mid-run,
then every client rebinds (T2 passed without its server) and keeps its address from B."""

from __future__ import annotations

import json
import subprocess
import time
from ipaddress import IPv4Address

import pytest

from dhcp.journal import list_leases
from dhcp.split import in_ranges, share
from tests.support.dhcp_lab import PY, ROOT, Server, write_config
from tests.support.dhcp_pair import across_a_kill
from tests.support.netns import bridge, namespaces

A_IP, B_IP, VIP = "10.50.0.2", "10.50.0.3", "10.50.0.1"
POOL = ((IPv4Address("10.50.1.0"), IPv4Address("10.50.2.255")),)    # 512: 256 each
CLIENTS = 200

PAIR_DHCP = f"""  enabled: true
  interfaces: [s0]
  split: 50
  rogue_probe_interval: 0
  subnets:
    - network: 10.50.0.0/21
      pool: 10.50.1.0-10.50.2.255
      router: {VIP}
      lease_time: 600
pair:
  servers: [{A_IP}, {B_IP}]
"""


@pytest.fixture
def school(tmp_path):
    """A bridge in `sw`; servers A (10.50.0.2) and B (10.50.0.3) and the clients' namespace on
    it. One config file for both servers, each in its own state directory."""
    with namespaces("psw", "psa", "psb", "pcl") as (sw, sa, sb, cl):
        bridge(sw, [(sa, "s0", "pa"), (sb, "s0", "pb"), (cl, "c0", "pc")])
        sa.ip("addr", "add", f"{A_IP}/21", "dev", "s0")
        sb.ip("addr", "add", f"{B_IP}/21", "dev", "s0")
        cl.ip("addr", "add", "10.50.7.250/21", "dev", "c0")
        shared = write_config(tmp_path, PAIR_DHCP, address=VIP)
        servers = {}
        for name, ns in (("a", sa), ("b", sb)):
            # the same file, but each its own state_dir, as on two machines
            path = tmp_path / f"{name}.yaml"
            path.write_text(shared.read_text().replace(str(tmp_path / "state"),
                                                       str(tmp_path / f"state-{name}")))
            servers[name] = Server(ns, path, tmp_path / f"{name}.log")
        try:
            for server in servers.values():
                server.start()
            yield cl, servers, tmp_path
        finally:
            for server in servers.values():
                server.stop()


def test_split_scope_failover_200_clients(school):
    cl, servers, tmp = school
    started = time.monotonic()
    out = tmp / "clients.json"
    driver = cl.popen([PY, "-m", "tests.support.dhcp_pair", "c0", str(CLIENTS), str(out)],
                      cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines, killed_at = across_a_kill(driver, servers["a"].kill9)   # mid-run: exchanges with A in flight
    assert killed_at is not None and lines[-1] == "done", lines
    assert lines[-2] == "bound-all", lines
    record = json.loads(out.read_text())
    bound, rebound = record["bound"], record["rebound"]

    # every client got a lease, and no address went to two clients
    assert len(bound) == CLIENTS
    ips = [b["ip"] for b in bound.values()]
    assert len(set(ips)) == CLIENTS
    # each server offered only from its own share (also before A died)
    shares = {A_IP: share(POOL, 50, True), B_IP: share(POOL, 50, False)}
    for sid, ip, mac in record["offers"]:
        assert in_ranges(IPv4Address(ip), shares[sid]), (sid, ip, mac)
    of_a = {mac for mac, b in bound.items() if b["server"] == A_IP}
    assert of_a and len(of_a) < CLIENTS, "both servers served before the kill"

    # every client rebinds to B, the survivor, keeping its address; none is NAKed
    assert record["naks"] == []
    assert set(rebound) == set(bound)
    assert all(rebound[mac] == {"ip": bound[mac]["ip"], "server": B_IP} for mac in bound)

    # B made each of them durable: its journal, read after it stops, has all 200
    servers["b"].stop()
    rows = {(mac, ip) for mac, ip, _, _ in list_leases(tmp / "state-b" / "leases")}
    assert {(mac, b["ip"]) for mac, b in bound.items()} <= rows
    log = servers["b"].log.read_text()
    assert log.count("from the peer's share (its server did not answer)") == len(of_a)
    assert f"split scope: this is {B_IP} (second of pair.servers, 50% of each pool), peer {A_IP}" in log
    assert "rogue" not in log.lower().replace("rogue_probe", "")   # the peer is expected
    print(f"A served {len(of_a)} before kill -9 at {killed_at} bound; "
          f"{len(bound) - len(of_a)} from B; all rebound to B; {time.monotonic() - started:.1f} s")
