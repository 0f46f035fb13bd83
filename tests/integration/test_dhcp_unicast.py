"""dhcp.unicast_offers in namespaces made here: busybox udhcpc asks for unicast replies
(BOOTP broadcast flag clear) and has no address to answer ARP with, so an OFFER/ACK sent to
yiaddr only reaches it because the server inserted a neighbour entry (yiaddr → chaddr)
first. A packet sniffer on the client's link checks how each reply was addressed.

    python test_dhcp_unicast.py sniff IFACE SECONDS   (in the client namespace; prints JSON)
"""

from __future__ import annotations

import json
import select
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SELF = str(Path(__file__).resolve())
ETH_P_IP = 0x0800


def sniff(ifname: str, seconds: float) -> None:
    """Every UDP datagram to port 68 on the link: destination MAC and IP, DHCP type."""
    from dhcp.codec import ProtocolError, decode
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    sock.bind((ifname, ETH_P_IP))
    print("READY", flush=True)
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end and len(seen) < 100:
        if sys.stdin in select.select([sock, sys.stdin], [], [], 0.05)[0]:
            break
        try:
            frame = sock.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue
        ip = frame[14:]
        if len(ip) < 28 or ip[9] != 17:
            continue
        header = (ip[0] & 0x0F) * 4
        dport = struct.unpack_from("!H", ip, header + 2)[0]
        if dport != 68:
            continue
        try:
            msg = decode(ip[header + 8:])
        except ProtocolError:
            continue
        seen.append({"dst_mac": frame[:6].hex(":"), "dst_ip": socket.inet_ntoa(ip[16:20]),
                     "type": msg.msg_type, "yiaddr": str(msg.yiaddr), "flags": msg.flags})
    print(json.dumps(seen), flush=True)


# ---------------------------------------------------------------------------------------
import pytest  # noqa: E402

from tests.support import dhcp_lab as lab  # noqa: E402
from tests.support.netns import namespaces, veth  # noqa: E402


def dhcp_yaml(unicast: bool) -> str:
    return lab.SERVER_DHCP.replace("  interfaces: [s0]\n",
                                  f"  interfaces: [s0]\n  unicast_offers: {str(unicast).lower()}\n")


def lease_and_replies(tmp_path, unicast: bool, mac: str):
    with namespaces("dusrv", "ducli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        server = lab.Server(srv, lab.write_config(tmp_path, dhcp_yaml(unicast)), tmp_path / "s.log")
        server.start()
        sniffer = cli.popen([sys.executable, SELF, "sniff", "c0", "30"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert sniffer.stdout.readline().strip() == "READY"
            got = lab.udhcpc(cli, tmp_path, mac)
            time.sleep(0.2)
            out, _ = sniffer.communicate("stop\n", timeout=10)
            neigh = srv.run(["ip", "neigh", "show", "dev", "s0"]).stdout
        finally:
            if sniffer.poll() is None:
                sniffer.kill()
                sniffer.wait()
            server.stop()
    return got, json.loads(out.strip().splitlines()[-1]), neigh, server.log.read_text()


@pytest.mark.parametrize("mac, ip", [(lab.RESERVED_MAC, "10.50.0.57"),      # reserved device
                                     ("52:54:00:ee:00:01", "10.50.0.100")])  # pool client
def test_unicast_offer_and_ack_through_a_neighbour_entry(tmp_path, mac, ip):
    got, replies, neigh, log = lease_and_replies(tmp_path, True, mac)
    assert got["ip"] == ip, log
    kinds = {r["type"] for r in replies}
    assert {2, 5} <= kinds, replies                              # OFFER and ACK were seen
    for r in replies:
        assert r["flags"] & 0x8000 == 0                           # the client asked for unicast
        assert (r["dst_mac"], r["dst_ip"]) == (mac, ip), r       # ... and got it
    assert f"{ip} lladdr {mac}" in neigh, neigh
    assert "neighbour entry" not in log and "Traceback" not in log


def test_broadcast_when_unicast_offers_is_off(tmp_path):
    got, replies, neigh, log = lease_and_replies(tmp_path, False, "52:54:00:ee:00:02")
    assert got["ip"] == "10.50.0.100", log
    assert replies and all((r["dst_mac"], r["dst_ip"]) == ("ff:ff:ff:ff:ff:ff", "255.255.255.255")
                           for r in replies), replies
    assert "10.50.0.100 lladdr" not in neigh


if __name__ == "__main__":
    if sys.argv[1] == "sniff":
        sniff(sys.argv[2], float(sys.argv[3]))
