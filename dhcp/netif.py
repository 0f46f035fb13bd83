"""The served interfaces' IPv4 addresses, discovered over netlink and followed live; the
neighbour entries that unicast replies need. Netlink through pyroute2 (Debian 12: 0.7.2).

A socket subscribed to the link and IPv4 address groups wakes the reactor; an event about a
served interface (or one pyroute2 cannot name) schedules a re-read of the tables by a dump,
bursts coalesced. Only the addresses of the interfaces named in `dhcp.interfaces` are kept.

pyroute2 is imported on first use, not with this module: its package import loads all of
it (NDB, IPDB, ethtool…) whichever submodule is asked for, 0.07-0.09 s of CPU on top of what
the daemon has loaded by then (measured with 0.7.2), and a CLI command needs none of it.
"""

from __future__ import annotations

import os
import socket
from ipaddress import IPv4Address, IPv4Interface

from twisted.logger import Logger

from dhcp.machine import Interface

IFF_UP = 0x1
RTMGRP_LINK, RTMGRP_IPV4_IFADDR = 0x1, 0x10
NUD_REACHABLE = 0x02            # a neighbour entry that ages out like a learnt one


def _iproute():
    """A pyroute2 IPRoute (request/response rtnetlink socket), importing pyroute2 if needed."""
    from pyroute2 import IPRoute
    return IPRoute()


def read_addresses(names: tuple[str, ...], ipr=None) -> dict[int, tuple[Interface, ...]]:
    """ifindex → that interface's IPv4 addresses (only links that are up). `ipr`: an open
    IPRoute to dump with (else one is opened and closed for this call)."""
    if ipr is None:
        with _iproute() as own:
            return read_addresses(names, own)
    wanted = set(names)
    up = {}
    for link in ipr.get_links():
        name = link.get_attr("IFLA_IFNAME")
        if name in wanted and link["flags"] & IFF_UP:
            up[link["index"]] = name
    out: dict[int, list[Interface]] = {index: [] for index in up}
    for addr in ipr.get_addr(family=socket.AF_INET):
        index = addr["index"]
        # IFA_LOCAL is ours; IFA_ADDRESS differs from it on a point-to-point link (the peer)
        text = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
        if index in up and text:
            address = IPv4Address(text)
            net = IPv4Interface((address, addr["prefixlen"])).network
            out[index].append(Interface(up[index], index, address, net))
    return {index: tuple(addrs) for index, addrs in out.items()}


class Neighbours:
    """`ip neigh replace IP lladdr MAC dev IFINDEX`: a client without an address cannot answer
    ARP, so a reply unicast to yiaddr needs this entry first. The kernel handles the request
    at once, so its acknowledgement is read without waiting."""
    log = Logger()

    def __init__(self):
        self.ipr = None               # opened on the first unicast reply
        self.warned: set[int] = set()

    def add(self, ifindex: int, ip: IPv4Address, mac: bytes) -> None:
        if self.ipr is None:
            self.ipr = _iproute()
        self.ipr.neigh("replace", dst=str(ip), lladdr=mac.hex(":"), ifindex=ifindex,
                       state=NUD_REACHABLE)

    def __call__(self, iface: Interface, ip: IPv4Address, chaddr: bytes) -> None:
        """The DhcpHandler's `neighbour` hook; failures are logged (once per errno at warn),
        and the reply is still sent."""
        try:
            self.add(iface.index, ip, chaddr)
        except Exception as e:   # pyroute2's NetlinkError (EPERM…) or OSError
            code = getattr(e, "code", None) or getattr(e, "errno", None) or 0
            level = self.log.debug if code in self.warned else self.log.warn
            self.warned.add(code)
            level("neighbour entry {ip} → {mac} failed: {e} (dhcp.unicast_offers needs "
                  "CAP_NET_ADMIN)", ip=ip, mac=chaddr.hex(":"), e=e)

    def close(self) -> None:
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None


class _Events:
    """The reactor's reader on an rtnetlink socket joined to the link and IPv4 address
    groups; `on_event(message)` for each event pyroute2 parsed, `on_event(None)` when some
    were lost (ENOBUFS: the caller re-reads everything)."""

    def __init__(self, on_event):
        from pyroute2 import IPRSocket
        self.sock = IPRSocket()
        self.sock.bind(groups=RTMGRP_LINK | RTMGRP_IPV4_IFADDR)
        os.set_blocking(self.sock.fileno(), False)   # the socket object has no setblocking in 0.9
        self.on_event = on_event

    def fileno(self):
        return self.sock.fileno()

    def doRead(self):
        for _ in range(256):  # drain, bounded
            try:
                messages = self.sock.get()
            except (BlockingIOError, InterruptedError):
                return
            except Exception:   # ENOBUFS (events were dropped), or a message it cannot parse
                self.on_event(None)
                return
            for message in messages:
                self.on_event(message)

    def connectionLost(self, reason):
        self.sock.close()

    def logPrefix(self):
        return "dhcp-netlink"


class Interfaces:
    log = Logger()

    def __init__(self, names: tuple[str, ...], reactor=None, on_change=None):
        if reactor is None:
            from twisted.internet import reactor
        self.names = tuple(names)
        self.reactor = reactor
        self.by_index: dict[int, tuple[Interface, ...]] = {}
        self.on_change = on_change
        self._events: _Events | None = None
        self._ipr = None
        self._pending = None

    def start(self) -> None:
        self._ipr = _iproute()
        self._events = _Events(self._event)
        self.reactor.addReader(self._events)
        self.refresh()

    def stop(self) -> None:
        if self._events is not None:
            self.reactor.removeReader(self._events)
            self._events.connectionLost(None)
            self._events = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()

    def _event(self, message) -> None:
        if message is not None and not self._concerns_us(message):
            return
        if self._pending is None or not self._pending.active():
            self._pending = self.reactor.callLater(0.05, self.refresh)  # coalesce bursts

    def _concerns_us(self, message) -> bool:
        """A link or address event of a served interface, by name or by index (a rename);
        an address's label is its interface's name, or `name:alias`."""
        name = message.get_attr("IFLA_IFNAME") or message.get_attr("IFA_LABEL")
        return name is None or name.split(":")[0] in self.names or \
            message.get("index") in self.by_index

    def refresh(self) -> None:
        try:
            new = read_addresses(self.names, self._ipr)
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
