"""UEFI HTTP Boot, bytes only: the DISCOVER and REQUEST that Debian's OVMF (edk2-stable202211,
NetworkPkg/HttpBootDxe) sends, through dhcp.machine and the real BootResolver, give replies that
EDK2's own offer classification (HttpBootParseDhcp4Packet, HttpBootSelectDhcpOffer, ported below
as the oracle) takes as HTTP offers; PXE and iPXE clients get what they got before."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bootserverd.boot.resolver import ARCHITECTURES, BootResolver
from bootserverd.config.settings import BootConfig, Config, HttpConfig, ServerConfig
from bootserverd.model.objects import Defaults, Device, InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from dhcp import options as O
from dhcp.codec import Message, decode, encode
from dhcp.leases import LeaseTable
from dhcp.machine import Arrival, Interface, Machine, Policy, Subnet

A = IPv4Address
MAC = "52:54:00:e2:e2:01"
IMAGE = "bookworm-2026-11-20-101500-amd64"
IFACE = Interface("e2esrv", 3, A("10.47.0.1"), IPv4Network("10.47.0.0/24"))
HERE = Arrival(IFACE, A("0.0.0.0"), 68, addresses=(IFACE,))
URL = "http://10.47.0.1:8080/tftp/ipxe.efi"

# Captured from qemu + /usr/share/OVMF/OVMF_CODE_4M.fd (ovmf 2022.11-6+deb12u2), virtio-net
# (no NII, so "UNDI:003000"), PXE switched off with fw_cfg opt/org.tianocore/IPv4PXESupport=no.
# Option 55 is HttpBootDxe's list of 27 with ParaList[24] never set (0xeb here: stack garbage).
EDK2_DISCOVER = bytes.fromhex(
    "010106006c9641d90000800000000000000000000000000000000000525400e2e201" + "00" * 202
    + "63825363350101390205c0371b0102030405060c0d0f111216171c28292a2b3233363a3b3ceb436161"
    "1100000000000000000000000000000000005e030103005d0200103c2148545450436c69656e743a417263"
    "683a30303031363a554e44493a303033303030ff")
EDK2_REQUEST = bytes.fromhex(
    "010106006c9641d90000800000000000000000000000000000000000525400e2e201" + "00" * 202
    + "6382536335010336040a2f000132040a2f0064390205c0371b0102030405060c0d0f111216171c28292a2b"
    "3233363a3b3ceb4361611100000000000000000000000000000000005e030103005d0200103c2148545450"
    "436c69656e743a417263683a30303031363a554e44493a303033303030ff")
PXE_OPTS = ((O.VENDOR_CLASS, b"PXEClient:Arch:00007:UNDI:003000"), (O.CLIENT_ARCH, O.u16(7)),
            (O.PARAM_REQUEST, bytes([1, 3, 6, 43, 60, 66, 67, 97])))


# -- the oracle: EDK2 edk2-stable202211 NetworkPkg/HttpBootDxe/HttpBootDhcp4.c ---------------
def _edk2_options(area: bytes) -> dict[int, bytes]:
    """HttpBootParseDhcp4Options over one area: the first occurrence of each tag."""
    found, i = {}, 0
    while i < len(area) and area[i] != 255:
        if area[i] == 0:
            i += 1
            continue
        found.setdefault(area[i], area[i + 2:i + 2 + area[i + 1]])
        i += 2 + area[i + 1]
    return found


def edk2_offer_type(payload: bytes) -> str | None:
    """HttpBootParseDhcp4Packet: the HttpOfferType of a reply, None where EDK2 drops it."""
    options = _edk2_options(payload[240:])
    overload = options.get(O.OVERLOAD, b"\0")[0]
    if overload & 1:
        options = {**_edk2_options(payload[108:236]), **options}
    if overload & 2:
        options = {**_edk2_options(payload[44:108]), **options}
    proxy = payload[16] == 0                           # yiaddr's first byte
    http = options.get(O.VENDOR_CLASS, b"")[:10] == b"HTTPClient"    # CompareMem (..., 10)
    dns = O.DNS in options
    bootfile = options.get(O.BOOTFILE)
    if bootfile is None and not overload & 1 and payload[108]:
        bootfile = payload[108:236]
    if http and bootfile is None:
        return None                                    # "Http offer must have a boot URI"
    if not http:
        return None if proxy else ("DhcpDns" if dns else "DhcpOnly")
    url = urlsplit(bootfile.split(b"\0")[0].decode())
    if url.scheme not in ("http", "https") or not url.hostname:
        return None                                    # HttpParseUrl failed
    try:
        ip_uri = bool(A(url.hostname))
    except ValueError:
        ip_uri = False
    if proxy:
        return "ProxyIpUri" if ip_uri else "ProxyNameUri"
    return ("DhcpIpUriDns" if dns else "DhcpIpUri") if ip_uri else \
        ("DhcpNameUriDns" if dns else "DhcpNameUri")


def edk2_select(types: list[str | None]) -> tuple[int, int | None] | None:
    """HttpBootSelectDhcpOffer, corporate environment (no URI in the boot option): the offer
    taken (its index) and the proxy offer whose URI is booted, or None: DHCP fails."""
    first = {t: types.index(t) for t in reversed(types) if t is not None}
    for alone in ("DhcpIpUri", "DhcpIpUriDns", "DhcpNameUriDns"):
        if alone in first:
            return first[alone], None
    for dhcp, proxy in (("DhcpOnly", "ProxyIpUri"), ("DhcpDns", "ProxyIpUri"),
                        ("DhcpDns", "ProxyNameUri"), ("DhcpDns", "DhcpNameUri")):
        if dhcp in first and proxy in first:
            return first[dhcp], first[proxy]
    return None


# -- the world: the real resolver over one known device ---------------------------------------
def resolver(**config_changes) -> BootResolver:
    records = InventoryRecords((Device(MAC, hostname="e2e-pc1", type="thinclient"),), {},
                               Defaults(image=IMAGE))
    config = Config(server=ServerConfig(address=A("10.47.0.1"), state_dir=Path("/tmp")))
    return BootResolver(dataclasses.replace(config, **config_changes),
                        Model(Inventory(records, {IMAGE: object()}, None)))


def machine(dns=(), mode="server", **config_changes) -> Machine:
    subnet = Subnet(IFACE.network, ((A("10.47.0.100"), A("10.47.0.150")),), dns=dns, lease_time=3600)
    return Machine(Policy(mode=mode, subnets=(subnet,)), LeaseTable(),
                   resolver(**config_changes).resolve)


def reply_bytes(out) -> bytes:
    assert out.reply is not None, out.debug
    return out.reply.payload


def pxe_free(payload: bytes) -> bool:
    return b"PXEClient" not in payload and decode(payload).get(O.VENDOR_SPECIFIC) is None


def discover(mac=MAC, opts=()) -> Message:
    return decode(encode(Message(op=1, xid=7, chaddr=bytes.fromhex(mac.replace(":", "")),
                                 options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),) + tuple(opts))))


# -- the tests ----------------------------------------------------------------------------------
def test_the_captured_discover_is_what_httpbootdxe_builds():
    msg = decode(EDK2_DISCOVER)
    assert msg.msg_type == O.DISCOVER and msg.mac == MAC and msg.broadcast
    assert msg.get(O.VENDOR_CLASS) == b"HTTPClient:Arch:00016:UNDI:003000"
    assert O.to_u16s(msg.get(O.CLIENT_ARCH)) == (16,)
    prl = msg.get(O.PARAM_REQUEST)
    assert len(prl) == 27 and {O.VENDOR_SPECIFIC, O.VENDOR_CLASS, O.BOOTFILE, O.DNS} <= set(prl)


def test_edk2_discover_gets_an_http_offer_and_request_an_http_ack():
    m = machine()
    offer = reply_bytes(m.handle(decode(EDK2_DISCOVER), HERE, 0))
    o = decode(offer)
    assert o.msg_type == O.OFFER and o.yiaddr == A("10.47.0.100") and o.xid == 0x6c9641d9
    assert o.get(O.VENDOR_CLASS) == b"HTTPClient"
    assert o.get(O.BOOTFILE) == URL.encode() and o.file.rstrip(b"\0") == URL.encode()
    assert pxe_free(offer)
    assert edk2_offer_type(offer) == "DhcpIpUri" and edk2_select(["DhcpIpUri"]) == (0, None)
    # the captured REQUEST names server 10.47.0.1 and address 10.47.0.100: this very offer
    out = m.handle(decode(EDK2_REQUEST), HERE, 1)
    ack = decode(reply_bytes(out))
    assert ack.msg_type == O.ACK and ack.yiaddr == A("10.47.0.100")
    assert ack.get(O.VENDOR_CLASS) == b"HTTPClient" and ack.get(O.BOOTFILE) == URL.encode()
    assert o.get(O.TFTP_SERVER) is None and ack.get(O.TFTP_SERVER) is None   # no TFTP at all
    assert pxe_free(out.reply.payload)
    assert out.event.startswith(f"ACK 10.47.0.100 to {MAC} (e2e-pc1, thinclient)")


def test_with_dns_the_offer_is_still_an_http_offer():
    offer = reply_bytes(machine(dns=(A("10.47.0.53"),)).handle(decode(EDK2_DISCOVER), HERE, 0))
    assert edk2_offer_type(offer) == "DhcpIpUriDns" and edk2_select(["DhcpIpUriDns"]) == (0, None)


def test_before_the_http_client_class_the_firmware_selected_nothing():
    """What the daemon sent before: the URL without option 60 is a plain DHCP offer, and a lone
    DHCP offer is never selected (OVMF retried 4+8+16+32 s, then "Server response timeout")."""
    msg = decode(reply_bytes(machine().handle(decode(EDK2_DISCOVER), HERE, 0)))
    without = dataclasses.replace(msg, options=tuple((c, v) for c, v in msg.options if c != O.VENDOR_CLASS))
    assert edk2_offer_type(encode(without)) == "DhcpOnly" and edk2_select(["DhcpOnly"]) is None


def test_signed_chain_default_gives_http_boot_ipxe_an_ipxe_loader_is_kept():
    assert resolver().config.boot.loaders.efi64 == "shimx64.efi"
    assert resolver().resolve(MAC, 16, ipxe=False).bootfile == URL
    for loader in ("grubnetx64.efi", "syslinux.efi"):     # both stop after an HTTP boot
        loaders = dataclasses.replace(BootConfig().loaders, efi64=loader)
        assert resolver(boot=BootConfig(loaders=loaders)).resolve(MAC, 16, False).bootfile == URL
    snp = BootConfig(loaders=dataclasses.replace(BootConfig().loaders, efi64="snponly.efi"))
    assert resolver(boot=snp).resolve(MAC, 16, False).bootfile == "http://10.47.0.1:8080/tftp/snponly.efi"


@pytest.mark.parametrize("arch", [15, 16, 17, 18, 19, 20, 23, 24, 26, 28, 30, 38, 40])
def test_every_iana_http_boot_type_gets_a_url_or_nothing(arch):
    """IANA Processor Architecture Types "... boot from http": never a TFTP path."""
    plan = resolver().resolve(MAC, arch, ipxe=False)
    assert plan.bootfile.startswith("http://") or (plan.bootfile == "" and plan.error)
    assert (arch in ARCHITECTURES) == plan.bootfile.startswith("http://")
    out = machine().handle(discover(opts=((O.VENDOR_CLASS, b"HTTPClient:Arch:%05d:UNDI:003001" % arch),
                                          (O.CLIENT_ARCH, O.u16(arch)))), HERE, 0)
    got = decode(reply_bytes(out))
    # no URL: no "HTTPClient" either (EDK2 drops an HTTP offer without a URI; a plain DHCP offer
    # can still pair with another server's proxy offer)
    assert (got.get(O.VENDOR_CLASS) == b"HTTPClient") == bool(plan.bootfile)
    assert pxe_free(out.reply.payload)


def test_http_boot_without_the_http_service_gets_no_http_client_class():
    out = machine(http=HttpConfig(enabled=False)).handle(decode(EDK2_DISCOVER), HERE, 0)
    got = decode(reply_bytes(out))
    assert got.get(O.VENDOR_CLASS) is None and got.get(O.BOOTFILE) is None


def test_pxe_and_ipxe_clients_get_what_they_got_before():
    m = machine()
    pxe = decode(reply_bytes(m.handle(discover(opts=PXE_OPTS), HERE, 0)))
    assert pxe.get(O.BOOTFILE) == b"shimx64.efi" and pxe.file.rstrip(b"\0") == b"shimx64.efi"
    assert pxe.get(O.VENDOR_CLASS) is None and pxe.get(O.VENDOR_SPECIFIC) is None
    assert pxe.get(O.TFTP_SERVER) == b"10.47.0.1" and pxe.siaddr == A("10.47.0.1")
    # iPXE started by the HTTP boot: arch 7, "PXEClient", user class iPXE → its script
    ipxe = decode(reply_bytes(m.handle(discover(opts=PXE_OPTS + ((O.USER_CLASS, b"iPXE"),)), HERE, 0)))
    assert ipxe.get(O.BOOTFILE) == b"http://10.47.0.1:8080/ipxe/52-54-00-e2-e2-01.ipxe"
    assert ipxe.get(O.VENDOR_CLASS) is None and O.suboptions(ipxe.get(O.IPXE_ENCAP)) == {176: b"\x01"}


def test_proxy_mode_http_offer_pairs_with_the_address_servers_offer():
    m = machine(mode="proxy")
    out = m.handle(decode(EDK2_DISCOVER), HERE, 0)
    proxy = reply_bytes(out)
    p = decode(proxy)
    assert p.msg_type == O.OFFER and p.yiaddr == A("0.0.0.0") and p.get(O.SERVER_ID) == A("10.47.0.1").packed
    assert p.get(O.VENDOR_CLASS) == b"HTTPClient" and p.get(O.BOOTFILE) == URL.encode()
    assert pxe_free(proxy) and p.get(O.TFTP_SERVER) is None and p.get(O.LEASE_TIME) is None
    assert (out.reply.dest, out.reply.port) == (A("255.255.255.255"), 68)
    assert edk2_offer_type(proxy) == "ProxyIpUri"
    # the school's DHCP server (dnsmasq in the e2e test) offers an address and no boot file
    school = encode(Message(op=2, xid=0x6c9641d9, chaddr=bytes.fromhex("525400e2e201"),
                            yiaddr=A("10.47.0.160"), options=((O.MESSAGE_TYPE, O.u8(O.OFFER)),
                                                             (O.SERVER_ID, O.ip("10.47.0.2")))))
    assert edk2_select([edk2_offer_type(school), "ProxyIpUri"]) == (0, 1)
    # the firmware REQUESTs from the address server: not ours to answer
    assert m.handle(decode(EDK2_REQUEST), HERE, 1).reply is None
    # a PXE client in proxy mode still gets the PXE proxy offer
    pxe = decode(reply_bytes(m.handle(discover(opts=PXE_OPTS), HERE, 2)))
    assert pxe.get(O.VENDOR_CLASS) == b"PXEClient" and O.suboptions(pxe.get(O.VENDOR_SPECIFIC)) == {6: b"\x08"}
    # an HTTP boot client with nothing to boot gets no proxy offer at all
    ebc = discover(opts=((O.VENDOR_CLASS, b"HTTPClient:Arch:00017:UNDI:003001"), (O.CLIENT_ARCH, O.u16(17))))
    none = m.handle(ebc, HERE, 3)
    assert none.reply is None and "no boot URL" in none.debug
