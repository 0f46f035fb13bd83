"""Regression (fuzz_dhcp): a REQUEST naming our server id but neither option 50 nor ciaddr
made the machine test `None in network` (AttributeError: a traceback per packet, which any
client can send). Fixed in dhcp/machine.py: such a REQUEST is NAKed."""

from ipaddress import IPv4Address, IPv4Network

from dhcp import options as O
from dhcp.codec import Message, decode, encode
from dhcp.leases import LeaseTable
from dhcp.machine import Arrival, Interface, Machine, Policy, Subnet

A = IPv4Address
IFACE = Interface("eth1", 3, A("10.0.0.1"), IPv4Network("10.0.0.0/24"))


def test_selecting_request_without_an_address_is_naked():
    subnet = Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.110")),))
    machine = Machine(Policy(subnets=(subnet,)), LeaseTable(), lambda *a: None)
    msg = Message(xid=7, chaddr=bytes.fromhex("020000000001"),
                  options=((O.MESSAGE_TYPE, O.u8(O.REQUEST)), (O.SERVER_ID, A("10.0.0.1").packed)))
    outcome = machine.handle(decode(encode(msg)), Arrival(IFACE, A("0.0.0.0"), 68, addresses=(IFACE,)), 100.0)
    reply = decode(outcome.reply.payload)
    assert reply.msg_type == O.NAK and reply.get(O.MESSAGE) == b"SELECTING: no address requested"
    assert not outcome.changes and len(machine.leases) == 0
