"""dhcp.ping_check in namespaces made here: a host already using the first pool address
answers the server's ICMP echo, so udhcpc is offered the next address and the first is
marked in conflict; with the probe off, the first address is offered as before. Both the
unprivileged ping socket and the raw socket are exercised."""

from __future__ import annotations

import time

import pytest

from dhcp.journal import list_leases
from tests.support import dhcp_lab as lab
from tests.support.netns import namespaces, veth

SQUATTED = "10.50.0.100"        # the pool's first address, configured by hand on a host


def dhcp_yaml(ping_check: bool) -> str:
    return f"""  enabled: true
  interfaces: [s0]
  ping_check: {str(ping_check).lower()}
  ping_timeout: 0.3
  subnets:
    - network: 10.50.0.0/21
      pool: 10.50.0.100-10.50.0.120
      router: 10.50.0.1
      lease_time: 600
"""


@pytest.mark.parametrize("socket_kind", ["raw ICMP socket", "ICMP ping socket"])
def test_a_used_address_is_skipped(tmp_path, socket_kind):
    with namespaces("dpsrv", "dpcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        cli.ip("addr", "add", f"{SQUATTED}/21", "dev", "c0")       # the squatter
        if socket_kind == "ICMP ping socket":   # per namespace; a new one admits no group
            r = srv.run(["sysctl", "-w", "net.ipv4.ping_group_range=0 2147483647"])
            assert r.returncode == 0, r.stderr
        server = lab.Server(srv, lab.write_config(tmp_path, dhcp_yaml(True)), tmp_path / "s.log")
        server.start()
        try:
            started = time.monotonic()
            got = lab.udhcpc(cli, tmp_path, "52:54:00:dd:00:01")
            seconds = time.monotonic() - started
            again = lab.udhcpc(cli, tmp_path, "52:54:00:dd:00:02")
        finally:
            server.stop()
        log = server.log.read_text()
    assert got["ip"] == "10.50.0.101", log
    assert again["ip"] == "10.50.0.102"          # 10.50.0.100 stays out of the pool
    assert f"conflict probe on: ICMP echo before each new offer, 0.3 s timeout ({socket_kind})" in log
    assert log.count(f"conflict: {SQUATTED} answered a ping") == 1, log
    assert "Traceback" not in log
    assert seconds < 5.0                         # one probe answered at once, one timed out
    rows = {ip: mac for mac, ip, _, _ in list_leases(tmp_path / "state" / "leases", all_rows=True)}
    assert SQUATTED in rows                      # the conflict is durable, like a DECLINE


def test_probe_off_offers_the_used_address(tmp_path):
    with namespaces("dpsrv", "dpcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        cli.ip("addr", "add", f"{SQUATTED}/21", "dev", "c0")
        server = lab.Server(srv, lab.write_config(tmp_path, dhcp_yaml(False)), tmp_path / "s.log")
        server.start()
        try:
            got = lab.udhcpc(cli, tmp_path, "52:54:00:dd:00:01")
        finally:
            server.stop()
        log = server.log.read_text()
    assert got["ip"] == SQUATTED
    assert "conflict" not in log and "Traceback" not in log
