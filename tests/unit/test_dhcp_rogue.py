"""Rogue DHCP servers (dhcp/rogue.py, bytes only): server replies built by scapy as a packet
socket hands them over (the IP datagram), classified as ours, known or rogue; the bounded
table; the log line and when it is written again; the kernel filter of dhcp/watch.py run
by a small classic-BPF interpreter; the probe DISCOVER, and our machine never answering it."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, strategies as st
from scapy.layers.dhcp import BOOTP, DHCP
from scapy.layers.inet import IP, TCP, UDP

from bootserverd.config import settings as configmod
from bootserverd.config.schema import SchemaError
from dhcp import options as O
from dhcp import rogue
from dhcp.codec import decode
from dhcp.leases import BOUND, LeaseTable, pool_size
from dhcp.machine import Machine, Policy, Subnet
from dhcp.watch import FILTER, PACKET_OUTGOING, SKF_AD_PKTTYPE
from tests.support.dhcp_world import HERE, msg, resolve

A = IPv4Address
OURS = frozenset({A("10.0.0.1")})
OUR_MAC = bytes.fromhex("525400000001")
ROUTER_MAC = bytes.fromhex("02aabbccddee")
CLIENT = "52:54:00:12:34:56"


def reply(kind="offer", server="192.168.1.1", src=None, yiaddr="192.168.1.100", client=CLIENT,
          file=b"", bootfile=None, sport=67, dport=68) -> bytes:
    """A server's reply as the IP datagram a SOCK_DGRAM packet socket reads."""
    options = [("message-type", kind), ("server_id", server)]
    if bootfile is not None:
        options.append(("boot-file-name", bootfile))
    bootp = BOOTP(op=2, xid=7, yiaddr=yiaddr, chaddr=bytes.fromhex(client.replace(":", "")),
                  file=file)
    return bytes(IP(src=src or server, dst="255.255.255.255") / UDP(sport=sport, dport=dport)
                 / bootp / DHCP(options=options + ["end"]))


def sighting(packet: bytes, mac=ROUTER_MAC, interface="br0") -> rogue.Sighting:
    seen = rogue.sighting(interface, packet, mac)
    assert seen is not None
    return seen


def observe(det: rogue.Detector, packet: bytes, now: float, mac=ROUTER_MAC) -> rogue.Verdict:
    return det.observe(sighting(packet, mac), now, OURS, OUR_MAC)


# -- the datagram ---------------------------------------------------------------------------
def test_udp_payload_of_a_server_reply():
    packet = reply()
    src, payload = rogue.udp_payload(packet)
    assert src == A("192.168.1.1") and payload == bytes(IP(packet)[UDP].payload)


@pytest.mark.parametrize("packet", [
    bytes(IP() / UDP(sport=68, dport=67) / (b"x" * 300)),       # a client's request
    bytes(IP() / TCP(sport=67, dport=68)),
    bytes(IP(flags="MF") / UDP(sport=67, dport=68) / b"x"),     # first fragment
    bytes(IP(frag=10) / UDP(sport=67, dport=68) / b"x"),        # later fragment
    b"\x60" + bytes(60),                                        # IPv6
    b"\x45\x00",                                                # truncated
])
def test_udp_payload_refuses_everything_else(packet):
    assert rogue.udp_payload(packet) is None


@given(st.binary(max_size=600))
def test_any_bytes_are_refused_or_classified_never_raise(data):
    packet = bytes(IP(src="192.168.1.1") / UDP(sport=67, dport=68) / data)
    for candidate in (data, packet, packet[:len(packet) // 2]):
        seen = rogue.sighting("br0", candidate, ROUTER_MAC)
        if seen is None:
            continue
        verdict = rogue.Detector().observe(seen, 0.0, OURS, OUR_MAC)
        if verdict.new:
            assert "\n" not in rogue.describe(verdict)


# -- classification ---------------------------------------------------------------------------
def test_a_foreign_server_is_a_rogue_logged_once():
    det = rogue.Detector()
    first = observe(det, reply(file=b"pxelinux.0"), 100.0)
    assert first.kind == "rogue" and first.new and first.reply == "offer"
    again = observe(det, reply(), 130.0)
    ack = observe(det, reply("ack"), 131.0)
    nak = observe(det, reply("nak", yiaddr="0.0.0.0", client="52:54:00:00:00:09"), 132.0)
    assert not (again.new or ack.new or nak.new)
    [r] = det.rogues()
    assert r.as_dict() == {
        "server_ip": "192.168.1.1", "server_mac": "02:aa:bb:cc:dd:ee", "interface": "br0",
        "first_seen": 100.0, "last_seen": 132.0, "offers": 2, "acks": 1, "naks": 1,
        "last_offered": "192.168.1.100", "last_client": "52:54:00:00:00:09", "boot_file": ""}
    assert det.replies == {"offer": 2, "ack": 1, "nak": 1}
    assert det.active(132.0) == 1


def test_the_log_line():
    det = rogue.Detector()
    line = rogue.describe(observe(det, reply(bootfile="x"), 0.0))
    assert line == ('rogue DHCP server 192.168.1.1 (02:aa:bb:cc:dd:ee) on br0 offered '
                    '192.168.1.100 to 52:54:00:12:34:56 (boot file "x")')
    probe = rogue.probe_mac(A("10.0.0.1"))
    det = rogue.Detector()
    line = rogue.describe(observe(det, reply(client=probe.hex(":"), file=b"boot\nfake"), 0.0), probe)
    assert line.endswith(f'to {probe.hex(":")} (our probe) (boot file "boot?fake")')   # one line
    det = rogue.Detector()
    proxy = observe(det, reply(yiaddr="0.0.0.0", bootfile="ipxe.efi"), 0.0)
    assert "made an offer without an address (proxyDHCP)" in rogue.describe(proxy)


def test_ours_by_address_server_id_or_mac():
    det = rogue.Detector()
    assert observe(det, reply(server="10.0.0.1"), 0.0).kind == "ours"
    # relayed from elsewhere: the relay's source, our server id
    assert observe(det, reply(server="10.0.0.1", src="192.168.1.254"), 0.0).kind == "ours"
    assert observe(det, reply(), 0.0, mac=OUR_MAC).kind == "ours"
    assert not det.table and det.replies == {"offer": 0, "ack": 0, "nak": 0}


def test_known_servers_are_not_rogues():
    det = rogue.Detector(known=[A("192.168.1.1")])
    assert observe(det, reply(), 0.0).kind == "known"
    # a relay forwarding the known server's reply
    assert observe(det, reply(src="192.168.1.254"), 0.0).kind == "known"
    assert observe(det, reply(server="192.168.1.2"), 0.0).kind == "rogue"
    assert [str(r.server_ip) for r in det.rogues()] == ["192.168.1.2"]


def test_requests_and_other_types_are_ignored():
    det = rogue.Detector()
    request = decode(bytes(BOOTP(op=1, chaddr=b"\x02" * 6)
                           / DHCP(options=[("message-type", "discover"), "end"])))
    seen = rogue.Sighting("br0", A("0.0.0.0"), ROUTER_MAC, request)
    assert det.observe(seen, 0.0, OURS).kind == "ignored"
    assert observe(det, reply("inform"), 0.0).kind == "ignored"


def test_logged_again_after_an_hour_of_silence():
    det = rogue.Detector()
    assert observe(det, reply(), 0.0).new
    assert not observe(det, reply(), 3000.0).new
    assert det.active(3000.0 + rogue.SILENCE) == 0          # the gauge: none in the last hour
    back = observe(det, reply(), 3000.0 + rogue.SILENCE)
    assert back.new and back.silent_for == rogue.SILENCE
    assert rogue.describe(back).endswith("; back after 60 min of silence")
    assert det.rogues()[0].first_seen == 0.0 and det.rogues()[0].offers == 3


def test_the_table_is_bounded_and_a_flood_is_noticed():
    det = rogue.Detector(max_servers=4)
    for n in range(4):
        assert not observe(det, reply(server=f"192.168.1.{n + 1}"), float(n)).crowded
    flood = observe(det, reply(server="192.168.1.99"), 10.0)
    assert flood.new and flood.crowded and len(det.table) == 4
    assert "192.168.1.1" not in {str(r.server_ip) for r in det.rogues()}   # least recent went
    assert str(det.rogues()[0].server_ip) == "192.168.1.99"
    # evicting one silent for an hour is no flood
    quiet = observe(det, reply(server="192.168.1.98"), 10.0 + rogue.SILENCE + 5)
    assert quiet.new and not quiet.crowded


def test_a_server_is_one_row_per_address_and_mac():
    det = rogue.Detector()
    observe(det, reply(), 0.0)
    observe(det, reply(), 1.0, mac=bytes.fromhex("02aabbccdd01"))   # same address, other box
    assert len(det.table) == 2


# -- the kernel filter (dhcp/watch.py FILTER), run here by an interpreter -------------------------
def run_bpf(program, packet: bytes, pkttype: int = 0) -> int:
    """Classic BPF, the opcodes FILTER uses; out-of-bounds loads drop the packet as the kernel does.
    ``pkttype``: what the kernel's ancillary load of pkt_type gives (0 host, 4 outgoing)."""
    a = x = pc = 0
    for _ in range(64):
        code, jt, jf, k = program[pc]
        pc += 1
        if code == 0x20 and k == SKF_AD_PKTTYPE:   # ld pkt_type (ancillary)
            a = pkttype
        elif code in (0x30, 0x28, 0x48):            # ldb/ldh [k] and ldh [x+k]
            off = k + (x if code == 0x48 else 0)
            size = 1 if code == 0x30 else 2
            if off + size > len(packet):
                return 0
            a = int.from_bytes(packet[off:off + size], "big")
        elif code == 0xB1:                        # ldxb 4*([k]&0xf)
            if k >= len(packet):
                return 0
            x = 4 * (packet[k] & 0x0F)
        elif code == 0x15:                        # jeq #k
            pc += jt if a == k else jf
        elif code == 0x45:                        # jset #k
            pc += jt if a & k else jf
        elif code == 0x06:                        # ret #k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not interpreted")
    raise AssertionError("no ret")


def test_the_filter_keeps_exactly_server_replies():
    assert run_bpf(FILTER, reply()) > 0
    assert run_bpf(FILTER, reply(), pkttype=PACKET_OUTGOING) == 0     # our own replies never leave the kernel
    with_options = bytes(IP(options=b"\x01\x01\x01\x00", src="192.168.1.1") / UDP(sport=67, dport=68)
                         / (b"x" * 300))
    assert run_bpf(FILTER, with_options) > 0                       # IHL 6: ports found
    for packet in (bytes(IP() / UDP(sport=68, dport=67) / b"x"),
                   bytes(IP() / UDP(sport=67, dport=67)), bytes(IP() / TCP(sport=67, dport=68)),
                   bytes(IP(flags="MF") / UDP(sport=67, dport=68)),
                   bytes(IP(frag=3) / UDP(sport=67, dport=68)), b"\x45"):
        assert run_bpf(FILTER, packet) == 0, IP(packet).summary() if len(packet) > 20 else packet


def test_filter_layout_is_a_sock_filter_array():
    for code, jt, jf, k in FILTER:
        struct.pack("HBBI", code, jt, jf, k)                       # each fits struct sock_filter
        assert jt + jf < len(FILTER)


# -- the probe ----------------------------------------------------------------------------------
def test_probe_mac_is_local_unicast_stable_and_per_server():
    mac = rogue.probe_mac(A("10.0.0.1"))
    assert len(mac) == 6 and mac[0] & 0x03 == 0x02                 # locally administered, unicast
    assert mac == rogue.probe_mac(A("10.0.0.1")) != rogue.probe_mac(A("10.0.0.2"))


def test_probe_is_a_broadcast_discover_scapy_reads():
    mac = rogue.probe_mac(A("10.0.0.1"))
    packet = BOOTP(rogue.probe_discover(mac, 0x1234))
    assert packet.op == 1 and packet.flags == 0x8000 and packet.chaddr[:6] == mac
    assert packet.xid == 0x1234 and ("message-type", 1) in packet[DHCP].options


def test_our_machine_never_answers_its_own_probe():
    mac = rogue.probe_mac(A("10.0.0.1"))
    subnet = Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.109")),))
    table = LeaseTable()
    m = Machine(Policy(subnets=(subnet,), probe_mac=mac), table, resolve)
    probe = decode(rogue.probe_discover(mac, 1))
    out = m.handle(probe, HERE, 0.0)
    assert out.reply is None and out.changes == () and len(table) == 0
    request = msg(O.REQUEST, mac.hex(":"), opts=((O.REQUESTED_IP, A("10.0.0.100").packed),))
    assert m.handle(request, HERE, 0.0).reply is None and len(table) == 0
    other = m.handle(msg(O.DISCOVER, "02:00:00:09:09:09"), HERE, 0.0)
    assert other.reply.message.msg_type == O.OFFER                   # everyone else is served
    proxy = Machine(Policy(mode="proxy", probe_mac=mac), LeaseTable(), resolve)
    assert proxy.handle(probe, HERE, 0.0).reply is None


# -- pool use -----------------------------------------------------------------------------------
def test_pool_size_leaves_out_network_and_broadcast():
    net = IPv4Network("10.0.0.0/24")
    assert pool_size(((A("10.0.0.100"), A("10.0.0.109")),), net) == 10
    assert pool_size(((A("10.0.0.0"), A("10.0.0.255")),), net) == 254
    assert pool_size(((A("10.0.0.0"), A("10.0.0.1")), (A("10.0.0.254"), A("10.0.0.255"))), net) == 2


def test_holders_are_the_active_rows_of_a_pool():
    pool = ((A("10.0.0.100"), A("10.0.0.109")),)
    table = LeaseTable()
    table.offer(A("10.0.0.100"), b"a", "02:00:00:00:00:0a", None, 60.0, 0.0)
    table.bind(A("10.0.0.101"), b"b", "02:00:00:00:00:0b", None, 600.0)
    table.bind(A("10.0.0.50"), b"c", "02:00:00:00:00:0c", None, 600.0)     # outside the pool
    table.decline(A("10.0.0.102"), 600.0)
    assert sorted(str(r.ip) for r in table.holders(pool, 10.0)) == \
        ["10.0.0.100", "10.0.0.101", "10.0.0.102"]
    assert [r.state for r in table.holders(pool, 100.0) if r.state == BOUND] == [BOUND]
    assert sorted(str(r.ip) for r in table.holders(pool, 100.0)) == ["10.0.0.101", "10.0.0.102"]
    assert len(table.holders(pool, 100.0)) == 10 - table.free_count(pool, 100.0)


# -- config ---------------------------------------------------------------------------------------
def config_file(tmp_path, dhcp: str):
    (tmp_path / "images").mkdir()
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    path = tmp_path / "bootserverd.yaml"
    path.write_text(f"server: {{address: 10.0.0.1, state_dir: {tmp_path}}}\n"
                    f"images: {{dir: {tmp_path / 'images'}}}\n"
                    f"tftp: {{enabled: false}}\n"
                    f"inventory: {{source: yaml, file: {tmp_path / 'inventory.yaml'}}}\n"
                    f"dhcp:\n{dhcp}")
    return path


def test_config_keys(tmp_path):
    config = configmod.load(config_file(tmp_path, "  known_servers: [10.0.0.2, 10.0.0.3]\n"
                                                   "  rogue_probe_interval: 0\n"))
    assert config.dhcp.known_servers == (A("10.0.0.2"), A("10.0.0.3"))
    assert config.dhcp.rogue_probe_interval == 0
    (tmp_path / "defaults").mkdir()
    default = configmod.load(config_file(tmp_path / "defaults", ""))
    assert default.dhcp.known_servers == () and default.dhcp.rogue_probe_interval == 300


def test_config_errors_name_file_line_and_key(tmp_path):
    path = config_file(tmp_path, "  known_servers: [10.0.0.2, dhcp.school]\n"
                                 "  rogue_probe_interval: 0.5\n")
    with pytest.raises(SchemaError) as caught:
        configmod.load(path)
    problems = str(caught.value).splitlines()
    assert f"{path.resolve()}:6: dhcp.known_servers[1]: not an IPv4 address: 'dhcp.school'" in problems
    assert any(p.startswith(f"{path.resolve()}:7: dhcp.rogue_probe_interval: must be 0 (no probe) or at "
                            "least 1 second") for p in problems), problems
