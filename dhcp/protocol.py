"""Twisted adapter: UDP sockets with IP_PKTINFO, datagram → machine → durable rows → reply.

It only does I/O. The decisions are beside it, pure: machine.py (what to answer), sniff.py
(the order a read batch is answered in, who a malformed packet is blamed on) and
bootserverd.ops.ratelimit (which repeated log lines are shown). Its I/O helpers: journal.py
(group-committed leases), icmp.py (the conflict probe), netif.py (interfaces, neighbours).
"""

from __future__ import annotations

import socket
import struct
import time
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Callable

from twisted.logger import Logger

from bootserverd.ops.ratelimit import LogThrottle, suffix
from dhcp import sniff
from dhcp.codec import ProtocolError, decode
from dhcp.machine import BROADCAST, Arrival, Interface, Machine, Outcome, Probe, Reply

if TYPE_CHECKING:
    from dhcp.icmp import IcmpProber
    from dhcp.journal import GroupCommit

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("=i4s4s")   # struct in_pktinfo: ifindex, spec_dst, addr
READ_BATCH = 128                    # datagrams per doRead, bounded
LOG_INTERVAL = 60.0                 # a repeated line (same client, same kind): once a minute

log = Logger()


def open_socket(host: str, port: int, device: str | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    if device:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


class DhcpPort:
    """One UDP socket (67 or 4011) registered with the reactor as a reader."""

    def __init__(self, sock: socket.socket, handler: "DhcpHandler"):
        self.sock = sock
        self.port = sock.getsockname()[1]
        self.handler = handler

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return f"dhcp:{self.port}"

    def connectionLost(self, reason):
        self.sock.close()

    def doRead(self):
        batch = []
        for _ in range(READ_BATCH):
            try:
                data, ancdata, _, (src, sport) = self.sock.recvmsg(4096, 256)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                log.warn("receive failed on port {p}: {e}", p=self.port, e=e)
                break
            ifindex = 0
            for level, kind, value in ancdata:
                if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= PKTINFO.size:
                    ifindex = PKTINFO.unpack_from(value)[0]
            batch.append((data, src, sport, ifindex))
        for data, src, sport, ifindex in sniff.answer_order(batch):
            self.handler.datagram(self, data, IPv4Address(src), sport, ifindex)

    def send(self, reply: Reply) -> None:
        anc = []
        iface = reply.interface
        if iface is not None and iface.index:
            # A broadcast must leave by the arrival interface; a unicast (relay, renewing
            # client) follows the routing table. Either way the source is our address there.
            index = iface.index if reply.dest == BROADCAST else 0
            anc = [(socket.IPPROTO_IP, IP_PKTINFO,
                    PKTINFO.pack(index, iface.address.packed, bytes(4)))]
        try:
            self.sock.sendmsg([reply.payload], anc, 0, (str(reply.dest), reply.port))
        except OSError as e:
            log.warn("sending to {d}:{p} failed: {e}", d=reply.dest, p=reply.port, e=e)


class DhcpHandler:
    """Glue: datagram → Machine → (durable changes) → reply, and the log lines."""

    def __init__(self, machine: Machine, commit: "GroupCommit", interfaces,
                 clock: Callable[[], float] = time.time,
                 on_lease: Callable | None = None,
                 neighbour: Callable[[Interface, IPv4Address, bytes], None] | None = None,
                 debug: bool = False, prober: "IcmpProber | None" = None):
        self.machine = machine
        self.prober = prober                  # None: probes are answered "no reply" at once
        self.commit = commit
        self.interfaces = interfaces          # .addresses(ifindex) → that link's Interfaces
        self.clock = clock
        self.on_lease = on_lease
        self.neighbour = neighbour            # (interface, ip, mac) → None; for unicast offers
        self.malformed = LogThrottle(LOG_INTERVAL)   # keyed by the client blamed
        self.events = LogThrottle(LOG_INTERVAL)      # keyed by Outcome.throttle
        self.debug = debug  # per-packet lines cost CPU even when filtered out later
        self.counts = {"received": 0, "malformed": 0, "replies": 0}

    def datagram(self, port: DhcpPort, data: bytes, src: IPv4Address, sport: int,
                 ifindex: int) -> None:
        self.counts["received"] += 1
        addresses = self.interfaces.addresses(ifindex)
        if not addresses:
            return  # not an interface we serve (or it has no address yet)
        now = self.clock()
        try:
            msg = decode(data)
        except ProtocolError as e:
            self.counts["malformed"] += 1
            who = sniff.sender(data, str(src))
            hidden = self.malformed.admit(who, now)
            if hidden is not None:
                log.warn("malformed packet from {who} ({src}) on {ifname}: {e}{more}", who=who,
                         src=src, ifname=addresses[0].name, e=e, more=suffix(hidden))
            return
        arrival = Arrival(addresses[0], src, sport, port.port, addresses)
        try:
            outcome = self.machine.handle(msg, arrival, now)
        except Exception:
            log.failure("internal error handling a packet from {mac}", mac=msg.mac)
            return
        self._act(port, outcome)

    def _act(self, port: DhcpPort, outcome: Outcome) -> None:
        if outcome.debug and self.debug:
            text = outcome.debug() if callable(outcome.debug) else outcome.debug
            log.debug("{d}", d=text)
        reply = outcome.reply

        def send():
            if outcome.probe is not None:
                self._probe(port, outcome.probe)
            if reply is not None:
                if reply.unicast_to_mac and self.neighbour is not None:
                    self.neighbour(reply.interface, reply.dest, reply.message.chaddr)
                port.send(reply)
                self.counts["replies"] += 1
            if outcome.event:
                hidden = 0 if outcome.throttle is None else \
                    self.events.admit(outcome.throttle, self.clock())
                if hidden is not None:
                    log.info("{e}{more}", e=outcome.event, more=suffix(hidden))
            if self.on_lease is not None:
                for lease in outcome.changes:
                    self.on_lease(lease, outcome.renewal)

        if outcome.changes:
            self.commit.submit(outcome.changes, send)
        else:
            send()

    def _probe(self, port: DhcpPort, probe: Probe) -> None:
        def done(answered: bool) -> None:
            try:
                outcome = self.machine.probe_result(probe.ip, answered, self.clock())
            except Exception:
                log.failure("internal error after the conflict probe of {ip}", ip=probe.ip)
                return
            self._act(port, outcome)
        if self.prober is None:
            done(False)
        else:
            self.prober.probe(probe.ip, probe.timeout, done)
