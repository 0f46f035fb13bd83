"""DHCP: any datagram through the codec and the server policy (dhcp.codec, dhcp.machine).

Invariants: decode raises only ProtocolError; a decoded message re-encodes and decodes to
the same header; the machine never raises; a reply decodes, answers the same xid and
chaddr, and an ACK/OFFER address is inside the subnet; no address is bound to two clients.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from tests.fuzz import harness

with harness.instrumented("dhcp"):
    from dhcp import options as O
    from dhcp.codec import ProtocolError, decode, encode
    from dhcp.leases import BOUND, LeaseTable
    from dhcp.machine import PXE_PORT, Arrival, Interface, Machine, Policy, Subnet

from tests.fuzz.world import make_resolver

A = IPv4Address
IFACE = Interface("eth1", 3, A("10.0.0.1"), IPv4Network("10.0.0.0/24"))
SUBNETS = (Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.120")),),
                  router=A("10.0.0.1"), dns=(A("10.0.0.2"),), domain="school.example",
                  lease_time=600),
           Subnet(IPv4Network("10.9.0.0/24"), ((A("10.9.0.50"), A("10.9.0.60")),), lease_time=300))
RESOLVER = make_resolver()
INVENTORY = RESOLVER.model.inventory
RESERVED = frozenset(A(d.ip) for d in INVENTORY.devices if d.ip)


def _machine(mode: str, unknown: str) -> Machine:
    return Machine(Policy(mode=mode, unknown_mac_policy=unknown, subnets=SUBNETS,
                          server_address=A("10.0.0.1")),
                   LeaseTable(), RESOLVER.resolve,
                   lambda mac: A(d.ip) if (d := INVENTORY.device(mac)) and d.ip else None,
                   lambda ip: ip in RESERVED)


MACHINES = [_machine(m, u) for m in ("server", "proxy") for u in ("allow", "pxe-only", "deny")]
_clock = [1_000_000.0]


def _check_table(table: LeaseTable, now: float) -> None:
    holders: dict = {}
    for ip, row in table.by_ip.items():
        assert row.ip == ip, (ip, row)
        if row.state == BOUND and row.active(now):
            assert holders.setdefault(ip, row.key) == row.key
    for key, row in table.by_key.items():
        assert row.key == key, (key, row)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    selector, body = data[0], data[1:]
    try:
        msg = decode(body)
    except ProtocolError:
        return
    again = decode(encode(msg))
    assert (again.xid, again.chaddr, again.op, again.ciaddr, again.giaddr) == \
        (msg.xid, msg.chaddr, msg.op, msg.ciaddr, msg.giaddr)
    machine = MACHINES[selector % len(MACHINES)]
    _clock[0] += (selector >> 3) * 7.0          # time moves: offers and leases expire
    now = _clock[0]
    port = PXE_PORT if selector & 0x80 else 67
    arrival = Arrival(IFACE if selector & 0x40 == 0 else None, A("10.0.0.77"), 68, port,
                      (IFACE,) if selector & 0x40 == 0 else ())
    outcome = machine.handle(msg, arrival, now)
    if outcome.debug is not None and callable(outcome.debug):
        outcome.debug()
    reply = outcome.reply
    if reply is not None:
        got = decode(reply.payload)
        assert got.xid == msg.xid and got.chaddr == msg.chaddr and got.op == 2
        kind = got.msg_type
        assert kind in (O.OFFER, O.ACK, O.NAK), kind
        if kind in (O.OFFER, O.ACK) and int(got.yiaddr):
            assert any(got.yiaddr in s.network for s in SUBNETS), got.yiaddr
    _check_table(machine.leases, now)
    if len(machine.leases) > 5000:                 # keep a long run's memory flat
        machine.leases.__init__()
