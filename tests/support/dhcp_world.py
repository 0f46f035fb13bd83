"""A small world for the DHCP policy (dhcp.machine) tests, bytes only: one interface, three
devices (known, reserved, disabled), a resolver over them and client messages through the codec."""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from dhcp import options as O
from dhcp.codec import Message, decode, encode
from dhcp.machine import Arrival, Interface

A = IPv4Address
IFACE = Interface("eth1", 3, A("10.0.0.1"), IPv4Network("10.0.0.0/24"))
HERE = Arrival(IFACE, A("0.0.0.0"), 68, addresses=(IFACE,))
KNOWN = "02:00:00:00:00:01"
RESERVED_MAC = "02:00:00:00:00:02"


@dataclass(frozen=True)
class Dev:
    mac: str
    hostname: str
    type: str
    ip: str | None
    enabled: bool = True


@dataclass(frozen=True)
class Plan:
    bootfile: str
    next_server: str
    hostname: str | None
    reserved_ip: str | None
    device: Dev | None
    known: bool
    error: str | None = None


DEVICES = {KNOWN: Dev(KNOWN, "class-12", "thinclient", None),
           RESERVED_MAC: Dev(RESERVED_MAC, "teacher", "laptop", "10.0.0.50"),
           "02:00:00:00:00:03": Dev("02:00:00:00:00:03", "off", "fatclient", None, enabled=False)}


def resolve(mac, arch, ipxe, client_ip=None):
    dev = DEVICES.get(mac)
    boot = "boot.ipxe" if ipxe else {None: "", 0: "pxelinux.0", 7: "syslinux.efi"}.get(arch, "x")
    return Plan(boot, "10.0.0.1", dev.hostname if dev else None, dev.ip if dev else None, dev,
                dev is not None)


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


def msg(kind, mac=KNOWN, *, opts=(), **fields):
    options = ((O.MESSAGE_TYPE, O.u8(kind)),) + tuple(opts)
    m = Message(op=1, xid=42, chaddr=mac_bytes(mac), options=options, **fields)
    return decode(encode(m))  # always through the wire format
