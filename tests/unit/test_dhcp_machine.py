"""DHCP policy: every client state of RFC 2131 §4.3, PXE/iPXE, relays, proxyDHCP — bytes only."""

from ipaddress import IPv4Network

import pytest

from dhcp import options as O
from dhcp.codec import BROADCAST_FLAG, Message, decode, encode
from dhcp.leases import BOUND, DECLINED, RELEASED, LeaseTable
from dhcp.machine import Arrival, Machine, Policy, Subnet, PXE_PORT
from tests.support.dhcp_world import A, DEVICES, HERE, IFACE, KNOWN, RESERVED_MAC, msg, resolve

SUBNETS = (Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.102")),),
                  router=A("10.0.0.1"), dns=(A("10.0.0.2"),), domain="school.example",
                  ntp=(A("10.0.0.3"),), lease_time=1000),
           Subnet(IPv4Network("10.9.0.0/24"), ((A("10.9.0.50"), A("10.9.0.60")),), lease_time=500))


def machine(**policy):
    reserved = {A(d.ip) for d in DEVICES.values() if d.ip}
    return Machine(Policy(subnets=SUBNETS, **policy), LeaseTable(), resolve,
                   reserved=lambda ip: ip in reserved)


def exchange(m, mac=KNOWN, now=0.0, opts=()):
    offer = m.handle(msg(O.DISCOVER, mac, opts=opts), HERE, now).reply.message
    sid = offer.get(O.SERVER_ID)
    ack = m.handle(msg(O.REQUEST, mac, opts=((O.SERVER_ID, sid), (O.REQUESTED_IP, offer.yiaddr.packed))
                       + tuple(opts)), HERE, now)
    return offer, ack


def test_discover_offer_from_pool_with_options_and_hostname():
    out = machine().handle(msg(O.DISCOVER, opts=((O.PARAM_REQUEST, bytes([42, 1, 3, 12])),)),
                           HERE, 0)
    r = out.reply
    assert r.message.msg_type == O.OFFER and r.message.yiaddr == A("10.0.0.100")
    assert (r.dest, r.port, r.interface) == (A("255.255.255.255"), 68, IFACE)
    codes = [c for c, _ in r.message.options]
    assert codes[:2] == [O.MESSAGE_TYPE, O.SERVER_ID] and codes[5:9] == [42, 1, 3, 12]
    assert r.message.get(O.HOSTNAME) == b"class-12" and r.message.get(O.SERVER_ID) == A("10.0.0.1").packed
    assert O.to_text(r.message.get(O.DOMAIN)) == "school.example"
    assert out.changes == () and out.event is None and "OFFER 10.0.0.100" in out.debug()


def test_selecting_ack_is_a_durable_change_and_logged():
    m = machine()
    offer, out = exchange(m, now=5)
    assert out.reply.message.msg_type == O.ACK and out.reply.message.yiaddr == offer.yiaddr
    assert [c.state for c in out.changes] == [BOUND] and out.changes[0].expiry == 1005
    assert out.event.startswith("ACK 10.0.0.100 to 02:00:00:00:00:01 (class-12, thinclient) on eth1")
    assert O.to_u16s(out.reply.message.get(O.LEASE_TIME)) == (0, 1000)


def test_sticky_requested_and_reserved_addresses():
    m = machine()
    exchange(m)
    again = m.handle(msg(O.DISCOVER), HERE, 50).reply.message
    assert again.yiaddr == A("10.0.0.100")                       # same client, same address
    other = "02:00:00:00:00:77"
    req = m.handle(msg(O.DISCOVER, other, opts=((O.REQUESTED_IP, O.ip("10.0.0.102")),)), HERE, 1)
    assert req.reply.message.yiaddr == A("10.0.0.102")           # requested and free
    taken = m.handle(msg(O.DISCOVER, "02:00:00:00:00:78",
                         opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),)), HERE, 1)
    assert taken.reply.message.yiaddr == A("10.0.0.101")         # requested but leased
    res = m.handle(msg(O.DISCOVER, RESERVED_MAC), HERE, 1).reply.message
    assert res.yiaddr == A("10.0.0.50") and res.get(O.HOSTNAME) == b"teacher"


def test_reserved_address_never_given_to_another_client():
    m = machine()
    out = m.handle(msg(O.REQUEST, "02:00:00:00:00:99", opts=((O.REQUESTED_IP, O.ip("10.0.0.50")),)),
                   HERE, 0)
    assert out.reply.message.msg_type == O.NAK
    offer = m.handle(msg(O.DISCOVER, "02:00:00:00:00:99", opts=((O.REQUESTED_IP, O.ip("10.0.0.50")),)),
                     HERE, 0).reply.message
    assert offer.yiaddr != A("10.0.0.50")


def test_selecting_other_server_forgets_offer_silently():
    m = machine()
    m.handle(msg(O.DISCOVER), HERE, 0)
    out = m.handle(msg(O.REQUEST, opts=((O.SERVER_ID, O.ip("10.0.0.254")),
                                        (O.REQUESTED_IP, O.ip("10.0.0.100")))), HERE, 0)
    assert out.reply is None and out.changes == ()
    assert m.leases.at(A("10.0.0.100")) is None


def test_selecting_without_offer_naks():
    out = machine().handle(msg(O.REQUEST, opts=((O.SERVER_ID, O.ip("10.0.0.1")),
                                                (O.REQUESTED_IP, O.ip("10.0.0.101")))), HERE, 0)
    assert out.reply.message.msg_type == O.NAK and out.event.startswith("NAK 10.0.0.101")


def test_init_reboot_wrong_subnet_nak_or_silence():
    wrong = msg(O.REQUEST, opts=((O.REQUESTED_IP, O.ip("192.168.1.5")),))
    out = machine().handle(wrong, HERE, 0)
    assert out.reply.message.msg_type == O.NAK and "wrong subnet" in out.event
    assert out.reply.dest == A("255.255.255.255")
    quiet = machine(authoritative=False).handle(wrong, HERE, 0)
    assert quiet.reply is None and quiet.event is None


def test_init_reboot_own_lease_ack_and_after_loss():
    m = machine()
    exchange(m)
    out = m.handle(msg(O.REQUEST, opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),)), HERE, 100)
    assert out.reply.message.msg_type == O.ACK and "[INIT-REBOOT]" in out.event and not out.renewal
    fresh = machine()  # no record: the address is free in the pool, so it is confirmed
    assert fresh.handle(msg(O.REQUEST, opts=((O.REQUESTED_IP, O.ip("10.0.0.101")),)), HERE, 0) \
        .reply.message.msg_type == O.ACK
    # someone else's address → NAK
    out = m.handle(msg(O.REQUEST, "02:00:00:00:00:55", opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),)),
                   HERE, 100)
    assert out.reply.message.msg_type == O.NAK


def test_renewing_unicast_and_rebinding():
    m = machine()
    exchange(m)
    src = Arrival(IFACE, A("10.0.0.100"), 68, addresses=(IFACE,))
    out = m.handle(msg(O.REQUEST, ciaddr=A("10.0.0.100")), src, 600)
    r = out.reply
    assert r.message.msg_type == O.ACK and (r.dest, r.port) == (A("10.0.0.100"), 68)
    assert r.message.ciaddr == A("10.0.0.100") and out.changes[0].expiry == 1600
    assert "[RENEWING]" in out.event and out.renewal
    out = m.handle(msg(O.REQUEST, ciaddr=A("10.0.0.100")), HERE, 700)
    assert "[REBINDING]" in out.event and out.renewal
    out = m.handle(msg(O.REQUEST, "02:00:00:00:00:56", ciaddr=A("10.0.0.100")), HERE, 700)
    assert out.reply.message.msg_type == O.NAK


def test_decline_quarantines_then_returns():
    m = machine()
    exchange(m)
    out = m.handle(msg(O.DECLINE, opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),
                                        (O.SERVER_ID, O.ip("10.0.0.1")))), HERE, 10)
    assert out.reply is None and out.changes[0].state == DECLINED and out.event.startswith("DECLINE")
    offer = m.handle(msg(O.DISCOVER), HERE, 11).reply.message
    assert offer.yiaddr == A("10.0.0.101")
    ask = msg(O.REQUEST, "02:00:00:00:01:03", opts=((O.REQUESTED_IP, O.ip("10.0.0.100")),))
    assert m.handle(ask, HERE, 12).reply.message.msg_type == O.NAK    # quarantined
    assert m.handle(ask, HERE, 10 + 601).reply.message.msg_type == O.ACK  # back after the hold


def test_release_frees_and_expiry_returns_to_pool():
    m = machine()
    exchange(m)
    exchange(m, "02:00:00:00:01:01")
    exchange(m, "02:00:00:00:01:02")
    assert m.handle(msg(O.DISCOVER, "02:00:00:00:01:03"), HERE, 1).reply is None  # exhausted
    out = m.handle(msg(O.RELEASE, ciaddr=A("10.0.0.100"), opts=((O.SERVER_ID, O.ip("10.0.0.1")),)),
                   HERE, 2)
    assert out.reply is None and out.changes[0].state == RELEASED and out.event.startswith("RELEASE")
    assert m.handle(msg(O.DISCOVER, "02:00:00:00:01:03"), HERE, 3).reply.message.yiaddr \
        == A("10.0.0.100")
    # everything expired by now: the row that expired longest ago (the offer) is reused
    out = m.handle(msg(O.DISCOVER, "02:00:00:00:01:04"), HERE, 2000)
    assert out.reply.message.yiaddr == A("10.0.0.100")
    assert m.handle(msg(O.DISCOVER, "02:00:00:00:01:05"), HERE, 2000).reply.message.yiaddr \
        == A("10.0.0.101")


def test_inform_acks_without_lease():
    src = Arrival(IFACE, A("10.0.0.7"), 68, addresses=(IFACE,))
    out = machine().handle(msg(O.INFORM, ciaddr=A("10.0.0.7")), src, 0)
    r = out.reply
    assert r.message.msg_type == O.ACK and r.message.yiaddr == A("0.0.0.0")
    assert r.message.get(O.LEASE_TIME) is None and r.message.get(O.ROUTER) == O.ip("10.0.0.1")
    assert (r.dest, r.port) == (A("10.0.0.7"), 68) and out.changes == ()


@pytest.mark.parametrize("rule,pxe,served", [("allow", False, True), ("deny", True, False),
                                             ("pxe-only", False, False), ("pxe-only", True, True)])
def test_unknown_mac_policy(rule, pxe, served):
    opts = ((O.VENDOR_CLASS, b"PXEClient:Arch:00000"), (O.CLIENT_ARCH, O.u16(0))) if pxe else ()
    m = machine(unknown_mac_policy=rule)
    out = m.handle(msg(O.DISCOVER, "02:00:00:00:00:99", opts=opts), HERE, 0)
    assert (out.reply is not None) == served
    assert m.handle(msg(O.DISCOVER, opts=opts), HERE, 0).reply is not None  # known always


def test_disabled_device_is_not_served():
    assert machine().handle(msg(O.DISCOVER, "02:00:00:00:00:03"), HERE, 0).reply is None


def test_pxe_arch_and_ipxe_pick_the_bootfile():
    m = machine()
    bios = m.handle(msg(O.DISCOVER, opts=((O.CLIENT_ARCH, O.u16(0)),
                                          (O.VENDOR_CLASS, b"PXEClient:Arch:00000"))), HERE, 0)
    r = bios.reply.message
    assert r.file == b"pxelinux.0" and r.get(O.BOOTFILE) == b"pxelinux.0"
    assert r.siaddr == A("10.0.0.1") and r.get(O.VENDOR_CLASS) is None  # no :4011 discovery
    assert r.get(O.TFTP_SERVER) == b"10.0.0.1"
    efi = m.handle(msg(O.DISCOVER, opts=((O.CLIENT_ARCH, O.u16(7)),)), HERE, 0).reply.message
    assert efi.file == b"syslinux.efi"
    ipxe = m.handle(msg(O.DISCOVER, opts=((O.USER_CLASS, b"iPXE"),)), HERE, 0).reply.message
    assert ipxe.file == b"boot.ipxe" and O.suboptions(ipxe.get(O.IPXE_ENCAP)) == {176: b"\x01"}


def test_relay_subnet_from_giaddr_reply_to_relay_with_option_82():
    m = machine()
    agent = O.encode_suboptions([(1, b"port7"), (2, b"sw1")])
    relayed = msg(O.DISCOVER, "02:00:00:00:00:99", giaddr=A("10.9.0.1"), hops=1,
                  opts=((O.RELAY_AGENT, agent),))
    r = m.handle(relayed, Arrival(IFACE, A("10.0.0.254"), 67, addresses=(IFACE,)), 0).reply
    assert r.message.yiaddr == A("10.9.0.50") and (r.dest, r.port) == (A("10.9.0.1"), 67)
    assert r.message.get(O.RELAY_AGENT) == agent and r.message.giaddr == A("10.9.0.1")
    assert r.message.get(O.SUBNET_MASK) == O.ip("255.255.255.0")
    req = msg(O.REQUEST, "02:00:00:00:00:99", giaddr=A("10.9.0.1"),
              opts=((O.SERVER_ID, O.ip("10.0.0.1")), (O.REQUESTED_IP, O.ip("10.9.0.50"))))
    out = m.handle(req, Arrival(IFACE, A("10.0.0.254"), 67, addresses=(IFACE,)), 0)
    assert out.reply.message.msg_type == O.ACK and "via relay 10.9.0.1" in out.event
    nak = m.handle(msg(O.REQUEST, "02:00:00:00:00:98", giaddr=A("10.9.0.1"),
                       opts=((O.REQUESTED_IP, O.ip("10.0.0.5")),)), HERE, 0).reply
    assert nak.message.msg_type == O.NAK and nak.message.flags & BROADCAST_FLAG
    unknown = msg(O.DISCOVER, giaddr=A("172.16.0.1"))
    assert m.handle(unknown, HERE, 0).reply is None


def test_reply_fits_client_max_size():
    big = Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.100")),),
                 dns=tuple(A(f"10.0.0.{i}") for i in range(1, 120)), domain="d" * 200)
    m = Machine(Policy(subnets=(big,)), LeaseTable(), resolve)
    r = m.handle(msg(O.DISCOVER, opts=((O.MAX_SIZE, O.u16(576)),)), HERE, 0).reply
    assert len(r.payload) <= 548
    back = decode(r.payload)
    assert back.msg_type == O.OFFER and back.get(O.SUBNET_MASK) is not None


def test_proxy_mode_answers_only_pxe_clients_without_address():
    m = machine(mode="proxy")
    assert m.handle(msg(O.DISCOVER), HERE, 0).reply is None
    pxe = ((O.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"), (O.CLIENT_ARCH, O.u16(0)),
           (O.CLIENT_UUID, b"\x00" + bytes(16)))
    r = m.handle(msg(O.DISCOVER, opts=pxe), HERE, 0).reply
    assert r.message.msg_type == O.OFFER and r.message.yiaddr == A("0.0.0.0")
    assert r.message.get(O.VENDOR_CLASS) == b"PXEClient" and r.message.file == b"pxelinux.0"
    assert O.suboptions(r.message.get(O.VENDOR_SPECIFIC)) == {6: b"\x08"}
    assert r.message.get(O.LEASE_TIME) is None and (r.dest, r.port) == (A("255.255.255.255"), 68)
    assert r.message.get(O.CLIENT_UUID) == b"\x00" + bytes(16)
    assert m.handle(msg(O.REQUEST, opts=pxe), HERE, 0).reply is None  # for the address server
    at4011 = Arrival(IFACE, A("10.0.0.77"), 68, port=PXE_PORT, addresses=(IFACE,))
    ack = m.handle(msg(O.REQUEST, opts=pxe, ciaddr=A("10.0.0.77")), at4011, 0).reply
    assert ack.message.msg_type == O.ACK and (ack.dest, ack.port) == (A("10.0.0.77"), 68)
    assert ack.message.file == b"pxelinux.0" and m.leases.by_ip == {}


def test_bootp_and_replies_ignored():
    m = machine()
    assert m.handle(decode(encode(Message(op=1, chaddr=b"\1" * 6))), HERE, 0).reply is None
    assert m.handle(decode(encode(Message(op=2, chaddr=b"\1" * 6,
                                          options=((53, b"\2"),)))), HERE, 0).reply is None


def test_client_identifier_wins_over_chaddr_when_configured():
    m = machine(match_client_id=True)
    cid = ((O.CLIENT_ID, b"\x00my-client"),)
    offer, _ = exchange(m, "02:00:00:00:09:01", opts=cid)
    again = m.handle(msg(O.DISCOVER, "02:00:00:00:09:02", opts=cid), HERE, 1).reply.message
    assert again.yiaddr == offer.yiaddr and again.get(O.CLIENT_ID) == b"\x00my-client"


def test_by_default_the_firmware_ipxe_and_initramfs_share_one_lease():
    """One PXE boot is three DHCP clients on one MAC with different (or no) option 61."""
    m = machine()
    mac = "02:00:00:00:09:03"
    firmware, _ = exchange(m, mac, opts=((O.CLIENT_ID, b"\x00\x12uefi-guid"),))
    ipxe, _ = exchange(m, mac, opts=((O.CLIENT_ID, b"\x01\x02\x00\x00\x00\x09\x03"),))
    initramfs, _ = exchange(m, mac)
    assert firmware.yiaddr == ipxe.yiaddr == initramfs.yiaddr


# -- regression (fuzz_dhcp): a REQUEST naming our server id but neither option 50 nor ciaddr
# made the machine test `None in network` (AttributeError: a traceback per packet, which any
# client can send). Fixed in dhcp/machine.py: such a REQUEST is NAKed.


def test_selecting_request_without_an_address_is_naked():
    subnet = Subnet(IPv4Network("10.0.0.0/24"), ((A("10.0.0.100"), A("10.0.0.110")),))
    machine = Machine(Policy(subnets=(subnet,)), LeaseTable(), lambda *a: None)
    msg = Message(xid=7, chaddr=bytes.fromhex("020000000001"),
                  options=((O.MESSAGE_TYPE, O.u8(O.REQUEST)), (O.SERVER_ID, A("10.0.0.1").packed)))
    outcome = machine.handle(decode(encode(msg)), Arrival(IFACE, A("0.0.0.0"), 68, addresses=(IFACE,)), 100.0)
    reply = decode(outcome.reply.payload)
    assert reply.msg_type == O.NAK and reply.get(O.MESSAGE) == b"SELECTING: no address requested"
    assert not outcome.changes and len(machine.leases) == 0
