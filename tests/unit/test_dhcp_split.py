"""Split scope for two boot servers (dhcp/split.py, dhcp.machine with Subnet.share): bytes only.

Two machines built from one subnet config, as two servers reading one file do: each offers
only from its share, both answer a reservation alike, and a client of a dead server renews
(REBINDING) from the survivor with its address."""

from dataclasses import dataclass
from ipaddress import IPv4Network

import pytest

from dhcp import options as O
from dhcp.leases import BOUND, LeaseTable
from dhcp.machine import Arrival, Interface, Machine, Policy, Subnet
from dhcp.split import first_count, identify, in_ranges, share
from tests.support.dhcp_world import A, DEVICES, RESERVED_MAC, msg, resolve

NET = IPv4Network("10.0.0.0/24")
POOL = ((A("10.0.0.100"), A("10.0.0.199")), (A("10.0.0.210"), A("10.0.0.219")))   # 110 addresses
VIP = Interface("eth1", 3, A("10.0.0.1"), NET)          # the VRRP address, listed first
OWN = {"a": A("10.0.0.2"), "b": A("10.0.0.3")}


@dataclass(frozen=True)
class SubnetConfig:          # the shape of config.SubnetConfig that Subnet.from_config reads
    network: str = "10.0.0.0/24"
    pool: tuple = POOL
    router: str = "10.0.0.1"
    dns: tuple = ()
    domain: str | None = None
    ntp: tuple = ()
    lease_time: int = 1000
    reserve_for_known: int | str = 0


def server(name: str, percent: float = 50, **config):
    subnet = Subnet.from_config(SubnetConfig(**config), (percent, name == "a"))
    reserved = {A(d.ip) for d in DEVICES.values() if d.ip}
    m = Machine(Policy(subnets=(subnet,), own_address=OWN[name]), LeaseTable(), resolve,
                reserved=lambda ip: ip in reserved)
    own = Interface("eth1", 3, OWN[name], NET)
    return m, Arrival(own, A("0.0.0.0"), 68, addresses=(VIP, own))


def bind(m, here, mac, now=0.0):
    offer = m.handle(msg(O.DISCOVER, mac), here, now).reply.message
    ack = m.handle(msg(O.REQUEST, mac, opts=((O.SERVER_ID, offer.get(O.SERVER_ID)),
                                             (O.REQUESTED_IP, offer.yiaddr.packed))), here, now)
    assert ack.reply.message.msg_type == O.ACK
    return offer.yiaddr


@pytest.mark.parametrize("percent", [1, 30, 50, 70, 99])
def test_shares_cover_the_pool_once(percent):
    first, second = share(POOL, percent, True), share(POOL, percent, False)
    addresses = [A(n) for lo, hi in POOL for n in range(int(lo), int(hi) + 1)]
    mine = [ip for ip in addresses if in_ranges(ip, first)]
    theirs = [ip for ip in addresses if in_ranges(ip, second)]
    assert len(mine) == first_count(110, percent) and mine == addresses[:len(mine)]
    assert theirs == addresses[len(mine):]          # disjoint, and together the whole pool


def test_share_ranges_at_fifty_percent():
    assert share(POOL, 50, True) == ((A("10.0.0.100"), A("10.0.0.154")),)
    assert share(POOL, 50, False) == ((A("10.0.0.155"), A("10.0.0.199")),
                                      (A("10.0.0.210"), A("10.0.0.219")))


def test_identify_this_server_among_local_addresses():
    servers = (OWN["a"], OWN["b"])
    assert identify(servers, [A("127.0.0.1"), A("10.0.0.1"), A("10.0.0.3")]) == (1, "")
    index, why = identify(servers, [A("127.0.0.1"), A("10.0.0.1")])
    assert index is None and "neither 10.0.0.2 and 10.0.0.3" in why and "pair.this_server" in why
    index, why = identify(servers, [A("10.0.0.2"), A("10.0.0.3")])
    assert index is None and "both" in why


def test_each_server_offers_only_from_its_share_until_it_is_exhausted():
    (a, at_a), (b, at_b) = server("a", 50), server("b", 50)
    given = {}
    for i in range(60):
        mac = f"02:00:00:00:10:{i:02x}"
        for name, m, here in (("a", a, at_a), ("b", b, at_b)):
            out = m.handle(msg(O.DISCOVER, mac), here, 0)
            if out.reply is not None:
                given.setdefault(name, []).append(out.reply.message.yiaddr)
            else:
                assert i >= 55 and "no free address" in out.event   # its share is used up
    assert len(given["a"]) == 55 and all(in_ranges(ip, share(POOL, 50, True)) for ip in given["a"])
    assert len(given["b"]) == 55 and all(in_ranges(ip, share(POOL, 50, False)) for ip in given["b"])
    assert not set(given["a"]) & set(given["b"])
    # a client asking for an address of the peer's share is offered one of ours
    out = b.handle(msg(O.DISCOVER, "02:00:00:00:11:01", opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),)),
                   at_b, 0)
    assert out.reply is None or in_ranges(out.reply.message.yiaddr, share(POOL, 50, False))


def test_both_answer_a_reservation_alike_with_their_own_server_id():
    (a, at_a), (b, at_b) = server("a"), server("b")
    replies = [m.handle(msg(O.DISCOVER, RESERVED_MAC), here, 0).reply.message
               for m, here in ((a, at_a), (b, at_b))]
    assert [r.yiaddr for r in replies] == [A("10.0.0.50")] * 2
    assert [r.get(O.HOSTNAME) for r in replies] == [b"teacher"] * 2
    # the server identifier is the server's own address, never the VRRP one beside it
    assert [A(r.get(O.SERVER_ID)) for r in replies] == [OWN["a"], OWN["b"]]
    # ... while next-server is the boot plan's (server.address: the service address)
    assert [r.siaddr for r in replies] == [VIP.address] * 2


def test_client_of_dead_server_rebinds_to_the_survivor_with_its_address():
    (a, at_a), (b, at_b) = server("a"), server("b")
    mac = "02:00:00:00:20:01"
    ip = bind(a, at_a, mac)                 # leased by A, which then dies
    assert in_ranges(ip, share(POOL, 50, True))
    # T2 passed without an answer from A: the client broadcasts a REQUEST with ciaddr
    out = b.handle(msg(O.REQUEST, mac, ciaddr=ip), at_b, 900)
    assert out.reply.message.msg_type == O.ACK and out.reply.message.yiaddr == ip
    assert A(out.reply.message.get(O.SERVER_ID)) == OWN["b"]
    assert [(c.ip, c.state, c.expiry) for c in out.changes] == [(ip, BOUND, 1900)]   # made durable
    assert "[REBINDING] from the peer's share" in out.event and out.renewal
    # from now on it renews with B (unicast), which knows the lease as this client's
    src = Arrival(at_b.interface, ip, 68, addresses=at_b.addresses)
    again = b.handle(msg(O.REQUEST, mac, ciaddr=ip), src, 1400)
    assert again.reply.message.msg_type == O.ACK and "[RENEWING]" in again.event
    assert "peer's share" not in again.event
    # B never offers that address to anyone else, nor does it take another client's claim
    other = "02:00:00:00:20:02"
    assert b.handle(msg(O.REQUEST, other, ciaddr=ip), at_b, 1400).reply.message.msg_type == O.NAK
    for i in range(60):
        out = b.handle(msg(O.DISCOVER, f"02:00:00:00:21:{i:02x}"), at_b, 1400)
        assert out.reply is None or out.reply.message.yiaddr != ip


def test_init_reboot_for_the_peers_share_is_left_to_the_peer():
    (a, at_a), (b, at_b) = server("a"), server("b")
    mac = "02:00:00:00:30:01"
    ip = bind(a, at_a, mac)
    out = b.handle(msg(O.REQUEST, mac, opts=((O.REQUESTED_IP, ip.packed),)), at_b, 10)
    assert out.reply is None and "left to the peer" in out.debug
    # ... while A confirms it, and B confirms one of its own share that it has no record of
    assert a.handle(msg(O.REQUEST, mac, opts=((O.REQUESTED_IP, ip.packed),)), at_a, 10) \
        .reply.message.msg_type == O.ACK
    own = share(POOL, 50, False)[0][0]
    assert b.handle(msg(O.REQUEST, mac, opts=((O.REQUESTED_IP, own.packed),)), at_b, 10) \
        .reply.message.msg_type == O.ACK
    # a lease B took over is B's to confirm at the next boot, while it lasts; once it has
    # expired, the address may have gone to another client of A: left to A again
    c, at_c = server("b")
    c.handle(msg(O.REQUEST, mac, ciaddr=ip), at_c, 900)
    out = c.handle(msg(O.REQUEST, mac, opts=((O.REQUESTED_IP, ip.packed),)), at_c, 950)
    assert out.reply.message.msg_type == O.ACK and "[INIT-REBOOT]" in out.event
    out = c.handle(msg(O.REQUEST, mac, opts=((O.REQUESTED_IP, ip.packed),)), at_c, 5000)
    assert out.reply is None and "left to the peer" in out.debug
    # another client's lease here: that address is known to be taken
    other = c.handle(msg(O.REQUEST, "02:00:00:00:30:02", opts=((O.REQUESTED_IP, ip.packed),)),
                     at_c, 960)
    assert other.reply.message.msg_type == O.NAK


def test_reserve_for_known_counts_the_share():
    m, here = server("b", 50, reserve_for_known=5)    # B's share: 55 addresses, 5 kept
    offered = 0
    for i in range(60):
        if m.handle(msg(O.DISCOVER, f"02:00:00:00:40:{i:02x}"), here, 0).reply is not None:
            offered += 1
    assert offered == 50


def test_one_server_without_split_offers_from_the_whole_pool():
    subnet = Subnet.from_config(SubnetConfig())
    assert subnet.share is None and subnet.offer_pool == POOL
