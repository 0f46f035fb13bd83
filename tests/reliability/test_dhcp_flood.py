"""A DISCOVER flood from random MACs (a pool-exhaustion attempt) in namespaces made here:
the server in one, the flooding pupil and the legitimate clients (busybox udhcpc) in two
others, all on one bridge. With unknown_mac_policy: allow the pool runs dry but reserved
devices keep their addresses; with allow and `reserve_for_known` the flood stops short of the
pool's last addresses, which a known device without a reservation then gets; with deny (or
pxe-only) the flood gets nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.reliability import figures
from tests.support import dhcp_lab as lab
from tests.support.netns import namespaces, veth

FLOOD = str(Path(__file__).resolve().parent / "dhcp_flood.py")


def dhcp_yaml(unknown: str, pool: str, reserve: str = "0") -> str:
    return f"""  enabled: true
  interfaces: [br0]
  unknown_mac_policy: {unknown}
  subnets:
    - network: 10.50.0.0/21
      pool: {pool}
      router: 10.50.0.1
      lease_time: 600
      reserve_for_known: {reserve}
"""


def phase(srv, flo, leg, tmp: Path, unknown: str, count: int, pool: str, pool_size: int,
          reserve: str = "0") -> dict:
    tmp.mkdir()
    config = lab.write_config(tmp, dhcp_yaml(unknown, pool, reserve))
    server = lab.Server(srv, config, tmp / f"server-{unknown}.log")
    server.start()
    try:
        flood = flo.popen([sys.executable, FLOOD, "f0", str(count), "60"], stdout=subprocess.PIPE,
                          text=True, cwd=lab.ROOT)
        legit = []
        try:
            deadline = time.monotonic() + 60
            while flood.poll() is None and time.monotonic() < deadline and len(legit) < 6:
                legit.append(("reserved", lab.lease_ip(leg, tmp, lab.RESERVED_MAC), "10.50.0.57"))
            summary = json.loads(flood.communicate(timeout=70)[0].strip().splitlines()[-1])
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
        # after the flood: the reserved device, and a known device without a reservation
        legit.append(("reserved", lab.lease_ip(leg, tmp, lab.RESERVED_MAC), "10.50.0.57"))
        known = lab.lease_ip(leg, tmp, lab.PXE_MAC)
        rss = figures.peak_rss_kib(server.proc.pid)
    finally:
        server.stop()
    log = server.log.read_text()
    assert "Traceback" not in log
    return {"flood": summary, "legit": legit, "known": known, "rss": rss, "pool_size": pool_size,
            "no_free": log.count("no free address") + log.count("kept for known devices")}


def test_discover_flood_from_random_macs(tmp_path):
    count = figures.scale(1000, 10000)
    pool, size = figures.scale(('"10.50.0.100-10.50.0.199"', 100), ('"10.50.1.0-10.50.4.255"', 1024))
    with namespaces("rsrv", "rflo", "rleg") as (srv, flo, leg):
        srv.ip("link", "add", "br0", "type", "bridge")
        veth(srv, "sf", flo, "f0")
        veth(srv, "sl", leg, "c0")
        for port in ("sf", "sl"):
            srv.ip("link", "set", port, "master", "br0")
        srv.ip("link", "set", "br0", "up")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "br0")
        allow = phase(srv, flo, leg, tmp_path / "allow", "allow", count, pool, size)
        kept = phase(srv, flo, leg, tmp_path / "kept", "allow", count, pool, size, '"10%"')
        deny = phase(srv, flo, leg, tmp_path / "deny", "deny", count, pool, size)
    ok = lambda p: sum(got == want for _, got, want in p["legit"])
    rows = []
    for name, p in (("allow", allow), ("allow, reserve_for_known: 10%", kept), ("deny", deny)):
        f = p["flood"]
        rows += [(f"unknown_mac_policy: {name}: flood", f"{f['sent']} DISCOVERs in {f['seconds']} s, "
                  f"{f['offers']} OFFERs for {f['distinct_addresses']} distinct addresses "
                  f"(pool {p['pool_size']}); refusal lines logged (throttled): {p['no_free']}"),
                 (f"unknown_mac_policy: {name}: reserved device (udhcpc)",
                  f"{ok(p)}/{len(p['legit'])} got 10.50.0.57 ({100 * ok(p) // len(p['legit'])} %)"),
                 (f"unknown_mac_policy: {name}: known device without reservation, after the flood",
                  p["known"] or "no address (pool held by the flood's offers)"),
                 (f"unknown_mac_policy: {name}: server peak RSS", f"{p['rss'] / 1024:.0f} MiB")]
    figures.record("dhcp_flood", "DHCP DISCOVER flood from random MACs (namespaces, bridge)", rows,
                   "With plain `allow` a flood holds every pool address for OFFER_HOLD (60 s) and "
                   "known devices without a reservation wait until offers expire. "
                   "`dhcp.subnets[].reserve_for_known` (a count or a share of the pool) keeps the "
                   "pool's last free addresses for devices in the inventory; `unknown_mac_policy: "
                   "deny` or `pxe-only` (a flood tool rarely sends option 93) refuses the flood "
                   "outright. Reserved devices get their fixed address in every case.")
    for p in (allow, kept, deny):
        assert ok(p) == len(p["legit"]), p["legit"]
    assert allow["flood"]["distinct_addresses"] <= allow["pool_size"]
    keep = -(-allow["pool_size"] // 10)                      # 10 %, rounded up
    assert kept["flood"]["distinct_addresses"] == kept["pool_size"] - keep, kept["flood"]
    assert kept["known"] is not None and kept["no_free"] >= 1
    assert deny["flood"]["offers"] == 0 and deny["known"] is not None
