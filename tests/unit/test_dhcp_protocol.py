"""Regression (reliability: DHCP flood): every DISCOVER of a pool-exhaustion flood wrote its
own "no free address" line (903 lines for 1000 packets). Fixed in dhcp/machine.py (the
event carries a throttle key) and dhcp/protocol.py (one line a minute per key, with a count,
through bootserverd.ops.ratelimit). Malformed packets are throttled the same way, per client.
Driven through DhcpHandler.datagram with real packets, as the UDP port hands them over."""

from ipaddress import IPv4Address, IPv4Network

import pytest
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from dhcp import options as O
from dhcp.codec import Message, encode
from dhcp.leases import LeaseTable
from dhcp.machine import Interface, Machine, Policy, Subnet
from dhcp.protocol import DhcpHandler

A = IPv4Address
IFACE = Interface("eth1", 3, A("10.0.0.1"), IPv4Network("10.0.0.0/24"))
SUBNET = Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.100")),))


class Port:
    port = 67

    def __init__(self):
        self.sent = []

    def send(self, reply):
        self.sent.append(reply.message)


class Interfaces:
    def addresses(self, ifindex):
        return (IFACE,) if ifindex == IFACE.index else ()


class Durable:
    """GroupCommit's contract without the thread: rows are durable, then the reply goes."""
    def submit(self, rows, then):
        then()


def mac(n: int) -> bytes:
    return b"\x02\x00" + n.to_bytes(4, "big")


def packet(kind: int, n: int, *opts) -> bytes:
    return encode(Message(op=1, xid=n, chaddr=mac(n),
                          options=((O.MESSAGE_TYPE, O.u8(kind)),) + opts))


@pytest.fixture
def served():
    clock = [1000.0]
    machine = Machine(Policy(subnets=(SUBNET,)), LeaseTable(), lambda *a: None)
    handler = DhcpHandler(machine, Durable(), Interfaces(), clock=lambda: clock[0])
    lines = []

    def observer(event):
        if event.get("log_level") in (LogLevel.info, LogLevel.warn):
            lines.append(formatEvent(event))
    globalLogPublisher.addObserver(observer)
    try:
        yield handler, Port(), clock, lines
    finally:
        globalLogPublisher.removeObserver(observer)


def test_pool_exhaustion_is_one_line_a_minute(served):
    handler, port, clock, lines = served
    handler.datagram(port, packet(O.DISCOVER, 1), A("0.0.0.0"), 68, 3)
    handler.datagram(port, packet(O.REQUEST, 1, (O.SERVER_ID, IFACE.address.packed),
                                  (O.REQUESTED_IP, A("10.0.0.100").packed)), A("0.0.0.0"), 68, 3)
    for n in range(2, 502):                    # the pool's one address is leased: a flood
        clock[0] += 0.01
        handler.datagram(port, packet(O.DISCOVER, n), A("0.0.0.0"), 68, 3)
    clock[0] += 60
    handler.datagram(port, packet(O.DISCOVER, 502), A("0.0.0.0"), 68, 3)
    assert [m.msg_type for m in port.sent] == [O.OFFER, O.ACK]
    assert lines == [
        "ACK 10.0.0.100 to 02:00:00:00:00:01 (-, unknown) on eth1 [SELECTING]",
        "no free address in 10.0.0.0/24 for 02:00:00:00:00:02 on eth1",
        "no free address in 10.0.0.0/24 for 02:00:00:00:01:f6 on eth1 "
        "(and 499 more like it since the last line)"]
    assert handler.counts == {"received": 503, "malformed": 0, "replies": 2}


def test_malformed_packets_one_warning_per_client_a_minute(served):
    handler, port, clock, lines = served
    broken = packet(O.DISCOVER, 7)[:240] + bytes((O.MESSAGE_TYPE, 9))   # option runs past the end
    for _ in range(5):
        handler.datagram(port, broken, A("10.0.0.9"), 68, 3)
    handler.datagram(port, b"\x01\x01", A("10.0.0.8"), 68, 3)           # too short for a MAC
    handler.datagram(port, broken, A("10.0.0.9"), 68, 99)               # not a served link
    clock[0] += 61
    handler.datagram(port, broken, A("10.0.0.9"), 68, 3)
    assert [line.split(" on eth1")[0] for line in lines] == [
        "malformed packet from 02:00:00:00:00:07 (10.0.0.9)",
        "malformed packet from 10.0.0.8 (10.0.0.8)",
        "malformed packet from 02:00:00:00:00:07 (10.0.0.9)"]
    assert lines[-1].endswith("(and 4 more like it since the last line)")
    assert handler.counts["malformed"] == 7 and not port.sent
