"""The served interfaces' IPv4 addresses, discovered over netlink and followed live.

A stdlib netlink socket subscribed to link and IPv4 address groups wakes the reactor on any
change (address added/removed, link down/up); the tables are then re-read by a netlink dump.
Only the addresses of the interfaces named in `dhcp.interfaces` are kept.
"""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface

from twisted.internet import reactor as default_reactor
from twisted.logger import Logger

from dhcp.machine import Interface

RTMGRP_LINK, RTMGRP_IPV4_IFADDR = 0x1, 0x10


def read_addresses(names: tuple[str, ...]) -> dict[int, tuple[Interface, ...]]:
    """ifindex → that interface's IPv4 addresses (only links that are up)."""
    wanted = set(names)
    up = {index: name for index, name, flags in _dump_links() if name in wanted and flags & IFF_UP}
    out: dict[int, list[Interface]] = {index: [] for index in up}
    for index, prefixlen, address in _dump_addresses():
        if index in up:
            net = IPv4Interface((address, prefixlen)).network
            out[index].append(Interface(up[index], index, address, net))
    return {index: tuple(addrs) for index, addrs in out.items()}


# A stdlib netlink dump instead of pyroute2's IPRoute: importing pyroute2 costs 0.2 s of
# every daemon start (a quarter of the restart budget), for two small tables.
NLMSG = struct.Struct("=IHHII")            # nlmsghdr: len, type, flags, seq, pid
IFINFO = struct.Struct("=BxHiII")          # ifinfomsg: family, type, index, flags, change
IFADDR = struct.Struct("=BBBBI")           # ifaddrmsg: family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_IFNAME, IFA_ADDRESS, IFA_LOCAL = 3, 1, 2
IFF_UP = 0x1


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    found = {}
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            break
        found[kind] = data[offset + RTATTR.size:offset + length]
        offset += (length + 3) & ~3
    return found


def _dump(kind: int, header: bytes, reply: int):
    """Yield (message bytes, payload offset, end) of each `reply` message of a dump."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(2.0)
        sock.bind((0, 0))
        sock.send(NLMSG.pack(NLMSG.size + len(header), kind, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
                  + header)
        for _ in range(100000):  # bounded: a dump ends with NLMSG_DONE
            data = sock.recv(1 << 16)
            offset = 0
            while offset + NLMSG.size <= len(data):
                length, mtype, _, _, _ = NLMSG.unpack_from(data, offset)
                if length < NLMSG.size:
                    return
                if mtype == NLMSG_DONE:
                    return
                if mtype == NLMSG_ERROR:
                    code = struct.unpack_from("=i", data, offset + NLMSG.size)[0]
                    raise OSError(-code, f"netlink dump {kind}: {os.strerror(-code)}")
                if mtype == reply:
                    yield data, offset + NLMSG.size, offset + length
                offset += (length + 3) & ~3


def _dump_links():
    for data, start, end in _dump(RTM_GETLINK, IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0),
                                  RTM_NEWLINK):
        _, _, index, flags, _ = IFINFO.unpack_from(data, start)
        name = _attrs(data, start + IFINFO.size, end).get(IFLA_IFNAME, b"").rstrip(b"\0")
        yield index, name.decode("utf-8", "replace"), flags


def _dump_addresses():
    for data, start, end in _dump(RTM_GETADDR, IFADDR.pack(socket.AF_INET, 0, 0, 0, 0),
                                  RTM_NEWADDR):
        family, prefixlen, _, _, index = IFADDR.unpack_from(data, start)
        attrs = _attrs(data, start + IFADDR.size, end)
        raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)   # LOCAL differs on a p-t-p link
        if family == socket.AF_INET and raw is not None and len(raw) == 4:
            yield index, prefixlen, IPv4Address(raw)


# -- neighbour entries for unicast replies (dhcp.unicast_offers) ----------------------------
RTM_NEWNEIGH = 28
NDMSG = struct.Struct("=BxHiHBB")          # ndmsg: family, pad, pad, ifindex, state, flags, type
NDA_DST, NDA_LLADDR = 1, 2
NUD_REACHABLE = 0x02                       # ages out like a learnt entry
NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x4, 0x100, 0x400


def _rtattr(kind: int, payload: bytes) -> bytes:
    raw = RTATTR.pack(RTATTR.size + len(payload), kind) + payload
    return raw + bytes(-len(raw) % 4)


class Neighbours:
    """`ip neigh replace IP lladdr MAC dev IFINDEX` over one netlink socket: a client without
    an address cannot answer ARP, so a reply unicast to yiaddr needs this entry first. The
    kernel handles the request inside send(), so the ACK is read without waiting."""
    log = Logger()

    def __init__(self):
        self.sock: socket.socket | None = None
        self.seq = 0
        self.warned: set[int] = set()

    def add(self, ifindex: int, ip: IPv4Address, mac: bytes) -> None:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            self.sock.bind((0, 0))
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        body = NDMSG.pack(socket.AF_INET, 0, ifindex, NUD_REACHABLE, 0, 0) + \
            _rtattr(NDA_DST, ip.packed) + _rtattr(NDA_LLADDR, mac)
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        self.sock.send(NLMSG.pack(NLMSG.size + len(body), RTM_NEWNEIGH, flags, self.seq, 0) + body)
        for _ in range(16):   # bounded: the ACK of this request, skipping any stale one
            data = self.sock.recv(65536, socket.MSG_DONTWAIT)
            length, mtype, _, seq, _ = NLMSG.unpack_from(data)
            if mtype == NLMSG_ERROR and seq == self.seq:
                code = -struct.unpack_from("=i", data, NLMSG.size)[0]
                if code:
                    raise OSError(code, os.strerror(code))
                return

    def __call__(self, iface: Interface, ip: IPv4Address, chaddr: bytes) -> None:
        """The DhcpHandler's `neighbour` hook; failures are logged (once per errno at warn),
        and the reply is still sent."""
        try:
            self.add(iface.index, ip, chaddr)
        except OSError as e:
            level = self.log.debug if e.errno in self.warned else self.log.warn
            self.warned.add(e.errno)
            level("neighbour entry {ip} → {mac} failed: {e} (dhcp.unicast_offers needs "
                  "CAP_NET_ADMIN)", ip=ip, mac=chaddr.hex(":"), e=e)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


class _NetlinkReader:
    """An IReadDescriptor over a raw netlink socket; any message → on_change()."""

    def __init__(self, on_change):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
        self.sock.setblocking(False)
        self.on_change = on_change

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        for _ in range(256):  # drain, bounded
            try:
                self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: we missed events; a re-read covers them
                break
        self.on_change()

    def connectionLost(self, reason):
        self.sock.close()

    def logPrefix(self):
        return "dhcp-netlink"


class Interfaces:
    log = Logger()

    def __init__(self, names: tuple[str, ...], reactor=None, on_change=None):
        self.names = tuple(names)
        self.reactor = reactor or default_reactor
        self.by_index: dict[int, tuple[Interface, ...]] = {}
        self.on_change = on_change
        self._reader: _NetlinkReader | None = None
        self._pending = None

    def start(self) -> None:
        self._reader = _NetlinkReader(self._changed)
        self.reactor.addReader(self._reader)
        self.refresh()

    def stop(self) -> None:
        if self._reader is not None:
            self.reactor.removeReader(self._reader)
            self._reader.connectionLost(None)
            self._reader = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()

    def _changed(self) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self.reactor.callLater(0.05, self.refresh)  # coalesce bursts

    def refresh(self) -> None:
        try:
            new = read_addresses(self.names)
        except Exception as e:  # netlink trouble must not kill the reactor
            self.log.error("reading interface addresses failed: {e}", e=e)
            return
        if new != self.by_index:
            old = self.by_index
            self.by_index = new
            shown = ", ".join(f"{a.name} {a.address}/{a.network.prefixlen}"
                              for addrs in new.values() for a in addrs) or "none"
            self.log.info("serving on {shown}", shown=shown)
            missing = set(self.names) - {a.name for addrs in new.values() for a in addrs}
            if missing and old is not None:
                self.log.warn("interfaces without an IPv4 address or down: {m}",
                              m=", ".join(sorted(missing)))
            if self.on_change:
                self.on_change()

    def addresses(self, index: int) -> tuple[Interface, ...]:
        return self.by_index.get(index, ())
