"""Conflict probe (dhcp.ping_check): the ICMP echo codec against scapy, and the policy's
probe action / probe result, bytes only."""

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given, strategies as st
from scapy.layers.inet import ICMP, IP

from dhcp import icmp
from dhcp import options as O
from dhcp.leases import DECLINED, LeaseTable
from dhcp.machine import PROBE_ATTEMPTS, Machine, Policy, Probe, Subnet
from tests.support.dhcp_world import DEVICES, HERE, KNOWN, RESERVED_MAC, msg, resolve

A = IPv4Address
POOL = ((A("10.0.0.100"), A("10.0.0.109")),)
NET = IPv4Network("10.0.0.0/24")
UNKNOWN = "02:00:00:01:00:01"


# -- ICMP codec --------------------------------------------------------------------------
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_echo_request_is_what_scapy_parses(ident, seq, payload):
    packet = ICMP(icmp.echo_request(ident, seq, payload))
    assert (packet.type, packet.code, packet.id, packet.seq) == (8, 0, ident, seq)
    assert bytes(packet.payload) == payload
    rebuilt = ICMP(type=8, id=ident, seq=seq) / payload        # scapy computes the checksum
    assert bytes(rebuilt) == icmp.echo_request(ident, seq, payload)


@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.binary(max_size=64))
def test_echo_replies_built_by_scapy_are_recognised(ident, seq, payload):
    reply = bytes(ICMP(type=0, id=ident, seq=seq) / payload)
    assert icmp.parse_echo_reply(reply, ip_header=False) == (ident, seq)
    with_ip = bytes(IP(src="10.0.0.100", dst="10.0.0.1") / ICMP(type=0, id=ident, seq=seq) / payload)
    assert icmp.parse_echo_reply(with_ip, ip_header=True) == (ident, seq)


def test_other_icmp_and_damage_are_not_replies():
    assert icmp.parse_echo_reply(bytes(ICMP(type=8, id=1, seq=2)), False) is None     # request
    assert icmp.parse_echo_reply(bytes(ICMP(type=3, code=1)), False) is None          # unreachable
    good = bytearray(bytes(ICMP(type=0, id=1, seq=2) / b"abc"))
    good[-1] ^= 0xFF
    assert icmp.parse_echo_reply(bytes(good), False) is None                          # checksum
    assert icmp.parse_echo_reply(b"\x00\x00", False) is None
    assert icmp.parse_echo_reply(b"\x60" + bytes(40), True) is None                   # IPv6 header


# -- policy --------------------------------------------------------------------------------
def machine(ping_check=True):
    reserved = {A(d.ip) for d in DEVICES.values() if d.ip}
    subnet = Subnet(NET, POOL, lease_time=1000)
    return Machine(Policy(subnets=(subnet,), ping_check=ping_check, ping_timeout=0.5),
                   LeaseTable(), resolve, reserved=lambda ip: ip in reserved)


def test_probe_off_offers_at_once():
    out = machine(ping_check=False).handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0)
    assert out.probe is None and out.reply.message.yiaddr == A("10.0.0.100")


def test_probe_then_offer_when_nobody_answers():
    m = machine()
    out = m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0)
    assert out.reply is None and out.probe == Probe(A("10.0.0.100"), 0.5)
    # the client retransmits while the probe runs: no second probe, no early offer
    again = m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.3)
    assert again.reply is None and again.probe is None
    # another client meanwhile gets another address (the probed one is held)
    other = m.handle(msg(O.DISCOVER, "02:00:00:01:00:02"), HERE, 0.3)
    assert other.probe.ip == A("10.0.0.101")
    done = m.probe_result(A("10.0.0.100"), False, 0.5)
    offer = done.reply.message
    assert offer.msg_type == O.OFFER and offer.yiaddr == A("10.0.0.100") and offer.xid == 42
    ack = m.handle(msg(O.REQUEST, UNKNOWN, opts=((O.SERVER_ID, offer.get(O.SERVER_ID)),
                                                 (O.REQUESTED_IP, offer.yiaddr.packed))), HERE, 1.0)
    assert ack.reply.message.msg_type == O.ACK
    # its own address again later: no probe
    later = m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 5.0)
    assert later.probe is None and later.reply.message.yiaddr == A("10.0.0.100")


def test_an_answer_marks_a_conflict_and_the_next_address_is_probed():
    m = machine()
    m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0)
    out = m.probe_result(A("10.0.0.100"), True, 1.0)
    assert [(r.ip, r.state, r.key) for r in out.changes] == [(A("10.0.0.100"), DECLINED, None)]
    assert "conflict: 10.0.0.100 answered a ping" in out.event
    assert out.probe.ip == A("10.0.0.101") and out.reply is None
    offer = m.probe_result(A("10.0.0.101"), False, 2.0).reply.message
    assert offer.yiaddr == A("10.0.0.101")
    # the address in conflict stays out of the pool for decline_hold
    others = [m.handle(msg(O.DISCOVER, "02:00:00:01:00:%02x" % i), HERE, 3.0).probe.ip
              for i in range(10, 18)]
    assert A("10.0.0.100") not in others


def test_probing_gives_up_after_a_few_conflicts():
    m = machine()
    ip = m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0).probe.ip
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        out = m.probe_result(ip, True, float(attempt))
        if attempt < PROBE_ATTEMPTS:
            ip = out.probe.ip
    assert out.probe is None and out.reply is None and "waits for its retry" in out.event
    assert len([r for r in m.leases.by_ip.values() if r.state == DECLINED]) == PROBE_ATTEMPTS
    assert not m.probing


def test_reserved_and_known_own_addresses_are_not_probed():
    m = machine()
    fixed = m.handle(msg(O.DISCOVER, RESERVED_MAC), HERE, 0.0)
    assert fixed.probe is None and fixed.reply.message.yiaddr == A("10.0.0.50")
    assert m.handle(msg(O.DISCOVER, KNOWN), HERE, 0.0).probe is not None   # new pool address


def test_a_stray_result_is_ignored():
    assert machine().probe_result(A("10.0.0.105"), True, 0.0).changes == ()


# -- reply addressing with dhcp.unicast_offers -------------------------------------------
def test_unicast_offers_only_to_ethernet_clients_that_ask():
    from dhcp.codec import BROADCAST_FLAG, Message, decode, encode
    from tests.support.dhcp_world import mac_bytes
    m = Machine(Policy(subnets=(Subnet(NET, POOL),), unicast_offers=True), LeaseTable(), resolve)
    plain = m.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0).reply
    assert (plain.dest, plain.unicast_to_mac) == (A("10.0.0.100"), True)
    flagged = m.handle(msg(O.DISCOVER, "02:00:00:01:00:02", flags=BROADCAST_FLAG), HERE, 0.0).reply
    assert (str(flagged.dest), flagged.unicast_to_mac) == ("255.255.255.255", False)
    ib = decode(encode(Message(op=1, xid=7, htype=32, chaddr=bytes(range(16)),  # InfiniBand
                               options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),))))
    reply = m.handle(ib, HERE, 0.0).reply
    assert (str(reply.dest), reply.unicast_to_mac) == ("255.255.255.255", False)
    off = Machine(Policy(subnets=(Subnet(NET, POOL),)), LeaseTable(), resolve)
    assert str(off.handle(msg(O.DISCOVER, UNKNOWN), HERE, 0.0).reply.dest) == "255.255.255.255"
    assert mac_bytes(UNKNOWN) == plain.message.chaddr
