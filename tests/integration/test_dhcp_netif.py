"""dhcp.netif reads interface addresses with a pyroute2 netlink dump: compared here with
iproute2's view (`ip -j addr`) of a namespace made here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.netns import namespaces, veth

ROOT = Path(__file__).resolve().parents[2]
READ = ("import json, sys; sys.path.insert(0, sys.argv[1]); from dhcp.netif import read_addresses;"
        "print(json.dumps({str(i): [[a.name, str(a.address), str(a.network)] for a in addrs]"
        " for i, addrs in read_addresses(tuple(sys.argv[2:])).items()}))")


def read_in(ns, *names: str) -> dict:
    r = ns.run([sys.executable, "-c", READ, str(ROOT), *names])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def iproute2_view(ns, *names: str) -> dict:
    r = ns.run(["ip", "-j", "-4", "addr", "show"])
    out = {}
    for link in json.loads(r.stdout):
        if link["ifname"] in names and "UP" in link["flags"]:
            out[str(link["ifindex"])] = [
                [link["ifname"], a["local"], _network(a["local"], a["prefixlen"])]
                for a in link.get("addr_info", []) if a["family"] == "inet"]
    return out


def _network(address: str, prefixlen: int) -> str:
    from ipaddress import IPv4Interface
    return str(IPv4Interface(f"{address}/{prefixlen}").network)


def test_netlink_dump_matches_iproute2():
    with namespaces("nif", "nif2") as (a, b):
        veth(a, "s0", b, "c0")
        veth(a, "s1", b, "c1")
        a.ip("addr", "add", "10.80.0.1/24", "dev", "s0")
        a.ip("addr", "add", "10.80.1.1/21", "dev", "s0")      # a second subnet on one link
        a.ip("addr", "add", "10.81.0.1/24", "dev", "s1")
        a.ip("link", "set", "s1", "down")                      # down: not served
        # many addresses: the dump spans several netlink messages
        for i in range(2, 200):
            a.ip("addr", "add", f"10.82.{i}.1/24", "dev", "s0")
        got = read_in(a, "s0", "s1", "lo", "missing0")
        want = iproute2_view(a, "s0", "s1", "lo")
        assert got == want
        s0 = next(v for v in got.values() if v[0][0] == "s0")
        assert ["s0", "10.80.1.1", "10.80.0.0/21"] in s0 and len(s0) == 200
        assert not any(v and v[0][0] == "s1" for v in got.values())
        a.ip("link", "set", "s1", "up")
        assert ["s1", "10.81.0.1", "10.81.0.0/24"] in sum(read_in(a, "s1").values(), [])


def test_point_to_point_uses_the_local_address():
    with namespaces("nip", "nip2") as (a, b):
        veth(a, "t0", b, "t1")
        a.ip("addr", "add", "10.83.0.1", "peer", "10.83.0.2/32", "dev", "t0")
        # IFA_ADDRESS is the peer here; the served address is IFA_LOCAL
        assert sum(read_in(a, "t0").values(), []) == [["t0", "10.83.0.1", "10.83.0.1/32"]]
