"""Twisted adapter: UDP sockets with IP_PKTINFO, group-committed leases, reply routing.

Packets are read in batches; every ACK of a batch waits for one fsync of the lease journal
(done on a dedicated thread so the reactor keeps receiving meanwhile), then all are sent.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from ipaddress import IPv4Address
from typing import Callable

from twisted.internet import reactor as default_reactor
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from dhcp import icmp
from dhcp.codec import ProtocolError, decode
from dhcp.machine import BROADCAST, Arrival, Machine, Outcome, Probe, Reply

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
PKTINFO = struct.Struct("=i4s4s")   # struct in_pktinfo: ifindex, spec_dst, addr
READ_BATCH = 128                    # datagrams per doRead, bounded
WARN_INTERVAL = 60.0                # malformed-packet warnings: one per client per minute
_NEW_EXCHANGE = b"\x35\x01\x01"    # option 53 = DISCOVER (a heuristic: only orders work)

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


class GroupCommit:
    """Batches lease rows; one journal append + fsync per batch on a private thread.
    `then` callbacks run in the reactor once their rows are durable."""

    def __init__(self, db, reactor, snapshot: Callable[[], list], size: Callable[[], int]):
        self.db = db
        self.reactor = reactor
        self.snapshot = snapshot          # live rows, for compaction
        self.size = size                  # cheap row count, checked after every batch
        self.pending: list[tuple[tuple, Callable[[], None] | None]] = []
        self.busy = False
        self.pool = ThreadPool(1, 1, "dhcp-leasedb")
        self.batches = 0
        self.rows = 0

    def start(self) -> None:
        self.pool.start()

    def stop(self) -> None:
        self.pool.stop()

    def submit(self, rows: tuple, then: Callable[[], None] | None) -> None:
        self.pending.append((rows, then))
        if not self.busy:
            self.busy = True
            self.reactor.callLater(0, self._flush)  # let the rest of this read batch join

    def _flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            self.busy = False
            return
        rows = [row for rows, _ in batch for row in rows]
        d = deferToThreadPool(self.reactor, self.pool, self.db.append, rows)
        d.addCallbacks(self._written, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _written(self, _, batch) -> None:
        self.batches += 1
        self.rows += sum(len(rows) for rows, _ in batch)
        for _, then in batch:
            if then is not None:
                try:
                    then()
                except Exception:
                    log.failure("sending a reply failed")
        if self.db.needs_compaction(self.size()):
            d = deferToThreadPool(self.reactor, self.pool, self.db.compact, self.snapshot())
            d.addCallbacks(lambda _: self._flush(), self._compact_failed)
        else:
            self._flush()

    def _failed(self, failure, batch) -> None:
        log.error("lease storage failed, {n} replies not sent: {e}",
                  n=len(batch), e=failure.getErrorMessage())
        self._flush()

    def _compact_failed(self, failure) -> None:
        log.error("lease journal compaction failed: {e}", e=failure.getErrorMessage())
        self._flush()

    def drain(self):
        """A Deferred that fires when nothing is pending (for a clean stop)."""
        from twisted.internet.task import deferLater
        def check():
            if self.busy or self.pending:
                return deferLater(self.reactor, 0.01, check)
        return deferLater(self.reactor, 0, check)


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
        later = []
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
            if _NEW_EXCHANGE in data:
                # Under a backlog, finish exchanges already offered before starting new
                # ones: a late ACK is wasted work, a late OFFER costs the client a retry.
                later.append((data, src, sport, ifindex))
            else:
                self.handler.datagram(self, data, IPv4Address(src), sport, ifindex)
        for data, src, sport, ifindex in later:
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
    """Glue: datagram → Machine → (durable changes) → reply, with the logging rules."""

    def __init__(self, machine: Machine, commit: GroupCommit, interfaces,
                 clock: Callable[[], float] = time.time,
                 on_lease: Callable | None = None, neighbour: Callable | None = None,
                 debug: bool = False, prober: "IcmpProber | None" = None):
        self.machine = machine
        self.prober = prober                  # None: probes are answered "no reply" at once
        self.commit = commit
        self.interfaces = interfaces          # .addresses(ifindex) and .names
        self.clock = clock
        self.on_lease = on_lease
        self.neighbour = neighbour            # (interface, ip, mac) → None; for unicast offers
        self._warned: dict[object, float] = {}
        self._throttled: dict[str, tuple[float | None, int]] = {}   # key → (last logged, hidden since)
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
            who = data[28:34].hex(":") if len(data) >= 34 else str(src)
            self._warn_malformed(who, src, addresses[0].name, e, now)
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
            if outcome.event and self._loud(outcome.throttle):
                log.info("{e}", e=outcome.event)
            if self.on_lease is not None:
                for lease in outcome.changes:
                    self.on_lease(lease)

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

    def _loud(self, key: str | None) -> bool:
        """Whether to log an event; a throttled kind once a minute, saying how many were not."""
        if key is None:
            return True
        now = self.clock()
        last, hidden = self._throttled.get(key, (None, 0))
        if last is not None and now - last < WARN_INTERVAL:
            self._throttled[key] = (last, hidden + 1)
            return False
        if hidden:
            log.info("{n} more like the next line in the last {s:.0f} s", n=hidden, s=now - last)
        self._throttled[key] = (now, 0)
        return True

    def _warn_malformed(self, who, src, ifname, error, now) -> None:
        last = self._warned.get(who)
        if last is not None and now - last < WARN_INTERVAL:
            return
        if len(self._warned) > 10000:
            self._warned.clear()  # bounded memory under a flood of distinct senders
        self._warned[who] = now
        log.warn("malformed packet from {who} ({src}) on {ifname}: {e}",
                 who=who, src=src, ifname=ifname, e=error)


class IcmpProber:
    """ICMP echo for the conflict probe: a ping socket (SOCK_DGRAM, when
    net.ipv4.ping_group_range admits our group), else a raw socket (CAP_NET_RAW). Opened
    before privileges are dropped. One probe per address at a time (the machine's rule)."""

    def __init__(self, reactor=None):
        self.reactor = reactor or default_reactor
        try:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            self.raw = False
        except OSError:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
            self.raw = True
        self.sock.setblocking(False)
        self.ident = os.getpid() & 0xFFFF   # a ping socket replaces it with its own port
        self.seq = 0
        self.waiting: dict[IPv4Address, tuple[int, object, Callable[[bool], None]]] = {}
        self.reactor.addReader(self)

    @property
    def kind(self) -> str:
        return "raw ICMP socket" if self.raw else "ICMP ping socket"

    def probe(self, ip: IPv4Address, timeout: float, callback: Callable[[bool], None]) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        try:
            self.sock.sendto(icmp.echo_request(self.ident, self.seq), (str(ip), 0))
        except OSError as e:   # no route, say: nobody can answer, so the address is free
            log.debug("conflict probe of {ip} not sent: {e}", ip=ip, e=e)
        timer = self.reactor.callLater(timeout, self._finish, ip, False)
        self.waiting[ip] = (self.seq, timer, callback)

    def _finish(self, ip: IPv4Address, answered: bool) -> None:
        entry = self.waiting.pop(ip, None)
        if entry is None:
            return
        _, timer, callback = entry
        if answered and timer.active():
            timer.cancel()
        callback(answered)

    def doRead(self) -> None:
        for _ in range(READ_BATCH):
            try:
                data, (src, _) = self.sock.recvfrom(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warn("conflict probe socket: {e}", e=e)
                return
            reply = icmp.parse_echo_reply(data, self.raw)
            if reply is None:
                continue
            ip = IPv4Address(src)
            entry = self.waiting.get(ip)
            # A raw socket sees every echo reply on the host: match ours by id and sequence.
            if entry is not None and reply[1] == entry[0] and (not self.raw or reply[0] == self.ident):
                self._finish(ip, True)

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "dhcp-probe"

    def connectionLost(self, reason):
        self.sock.close()

    def close(self) -> None:
        self.reactor.removeReader(self)
        for ip in list(self.waiting):
            _, timer, _ = self.waiting.pop(ip)
            if timer.active():
                timer.cancel()
        self.sock.close()
