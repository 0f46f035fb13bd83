"""The served interfaces' IPv4 addresses, discovered with pyroute2 and followed live.

A stdlib netlink socket subscribed to link and IPv4 address groups wakes the reactor on any
change (address added/removed, link down/up); the tables are then re-read with pyroute2.
Only the addresses of the interfaces named in `dhcp.interfaces` are kept.
"""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv4Interface

from twisted.internet import reactor as default_reactor
from twisted.logger import Logger

from dhcp.machine import Interface

RTMGRP_LINK, RTMGRP_IPV4_IFADDR = 0x1, 0x10


def read_addresses(names: tuple[str, ...]) -> dict[int, tuple[Interface, ...]]:
    """ifindex → that interface's IPv4 addresses (only links that are up)."""
    from pyroute2 import IPRoute
    out: dict[int, tuple[Interface, ...]] = {}
    with IPRoute() as ipr:
        for name in names:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            index = found[0]
            link = ipr.get_links(index)[0]
            if not link["flags"] & 1:  # IFF_UP
                continue
            addrs = []
            for msg in ipr.get_addr(family=socket.AF_INET, index=index):
                addr = msg.get_attr("IFA_ADDRESS")
                if addr:
                    net = IPv4Interface(f"{addr}/{msg['prefixlen']}")
                    addrs.append(Interface(name, index, IPv4Address(addr), net.network))
            out[index] = tuple(addrs)
    return out


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
