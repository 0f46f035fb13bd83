"""The rogue DHCP server watch: I/O only (the decisions are dhcp/rogue.py's).

- A packet socket (AF_PACKET, SOCK_DGRAM, ETH_P_IP) with a classic BPF filter that passes only
  IPv4 UDP from port 67 to port 68: every server reply a served interface receives, ours
  excluded by the kernel (a packet socket of one protocol sees no outgoing frames; looped-back
  broadcasts are dropped for it) and by the detector (our addresses, our MAC). One socket for
  every interface, not one per interface: it is opened once, while the process may still hold
  CAP_NET_RAW (the daemon may switch user after start), and it follows interfaces that
  appear, change or go without being reopened — the served set is read from dhcp.netif's
  Interfaces at each read, as the DHCP handler does.
- The probe: every `dhcp.rogue_probe_interval` s one DISCOVER with the broadcast flag on each
  served interface, from an ordinary UDP socket (IP_PKTINFO picks the interface, as our
  replies do; no privilege needed). The looped-back copy reaches our own port 67, where the
  machine ignores the probe's MAC (Policy.probe_mac).
Without CAP_NET_RAW the watch is off (one warning) and DHCP is served as before.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import time
from ipaddress import IPv4Address
from typing import Callable

from twisted.internet import task
from twisted.logger import Logger

from bootserverd.ops.ratelimit import LogThrottle, suffix
from dhcp import rogue
from dhcp.protocol import IP_PKTINFO, PKTINFO

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
SIOCGIFHWADDR = 0x8927
PACKET_OUTGOING = 4
READ_BATCH = 64                    # frames per doRead, bounded
SKF_AD_PKTTYPE = 0xFFFFF004        # SKF_AD_OFF (-0x1000) + SKF_AD_PKTTYPE (4): the frame's pkt_type
# Classic BPF over the IP header (a SOCK_DGRAM packet socket's filter sees no link header):
# not one we send (our own replies stay in the kernel), UDP, not a fragment, source port 67,
# destination port 68; keep the frame, else drop it.
FILTER = (
    (0x20, 0, 0, SKF_AD_PKTTYPE),  # ld pkt_type
    (0x15, 10, 0, PACKET_OUTGOING),  # jeq OUTGOING: drop
    (0x30, 0, 0, 9),               # ldb [9]                  IP protocol
    (0x15, 0, 8, 17),              # jeq #17 (UDP), else drop
    (0x28, 0, 0, 6),               # ldh [6]                  flags, fragment offset
    (0x45, 6, 0, 0x3FFF),          # jset MF|offset: drop
    (0xB1, 0, 0, 0),               # ldxb 4*([0]&0xf)         X = IP header length
    (0x48, 0, 0, 0),               # ldh [x+0]                UDP source port
    (0x15, 0, 3, 67),              # jeq #67, else drop
    (0x48, 0, 0, 2),               # ldh [x+2]                UDP destination port
    (0x15, 0, 1, 68),              # jeq #68, else drop
    (0x06, 0, 0, 0xFFFF),          # ret: keep (up to 64 KiB)
    (0x06, 0, 0, 0),               # ret: drop
)

log = Logger()


def attach_filter(sock: socket.socket, program=FILTER) -> None:
    raw = b"".join(struct.pack("HBBI", *insn) for insn in program)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))   # struct sock_fprog
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_packet_socket() -> socket.socket:
    """Raises OSError (EPERM without CAP_NET_RAW)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        attach_filter(sock)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class RogueWatch:
    """Feeds `detector` from the packet socket and sends the probe. `interfaces`: the DHCP
    service's dhcp.netif.Interfaces; `server`: our configured server address."""

    def __init__(self, detector: rogue.Detector, interfaces, server: IPv4Address | None,
                 probe_mac: bytes, probe_interval: float, reactor=None,
                 clock: Callable[[], float] = time.time):
        if reactor is None:
            from twisted.internet import reactor
        self.detector = detector
        self.interfaces = interfaces
        self.server = server
        self.probe_mac = probe_mac
        self.probe_interval = probe_interval
        self.reactor = reactor
        self.clock = clock
        self.sock: socket.socket | None = None
        self.probe_sock: socket.socket | None = None
        self.crowded = LogThrottle(60.0)
        self.probes_sent = 0
        self._loop: task.LoopingCall | None = None
        self._table = None                    # the Interfaces.by_index the caches below are of
        self._ours: frozenset[IPv4Address] = frozenset()
        self._served: set[str] = set()
        self._macs: dict[str, bytes | None] = {}

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        try:
            self.sock = open_packet_socket()
        except OSError as e:
            log.warn("rogue DHCP server watch off: cannot open a packet socket ({e}; it needs "
                     "CAP_NET_RAW); DHCP is served as before", e=e)
            return
        self.reactor.addReader(self)
        self._start_probe()

    def stop(self) -> None:
        self._stop_probe()
        if self.sock is not None:
            self.reactor.removeReader(self)
            self.sock.close()
            self.sock = None

    def set_probe_interval(self, seconds: float) -> None:
        """SIGHUP: 0 turns the probe off; otherwise the next probe is an interval away."""
        self._stop_probe()
        self.probe_interval = seconds
        self._start_probe()

    def _start_probe(self) -> None:
        """The first probe one interval from now, not at once: every other server answers it,
        and one that pings an address before offering it (dnsmasq: ~3 s, answering nobody
        meanwhile, measured) would make the clients of a restart wait longer."""
        if self.probe_interval <= 0 or self.sock is None:   # no sniffer: nobody hears answers
            return
        self.probe_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.probe_sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        self._loop = task.LoopingCall(self.probe)
        self._loop.clock = self.reactor
        self._loop.start(self.probe_interval, now=False)

    def _stop_probe(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self.probe_sock is not None:
            self.probe_sock.close()
            self.probe_sock = None

    # -- the probe ---------------------------------------------------------------------------
    def probe(self) -> None:
        """One DISCOVER on each served interface that has an address (its source)."""
        payload = rogue.probe_discover(self.probe_mac, int.from_bytes(os.urandom(4), "big"))
        for index, addrs in list(self.interfaces.by_index.items()):
            if not addrs or self.probe_sock is None:
                continue
            pktinfo = PKTINFO.pack(index, addrs[0].address.packed, bytes(4))
            try:
                self.probe_sock.sendmsg([payload], [(socket.IPPROTO_IP, IP_PKTINFO, pktinfo)], 0,
                                        ("255.255.255.255", rogue.SERVER_PORT))
                self.probes_sent += 1
            except OSError as e:
                log.debug("rogue probe on {i} not sent: {e}", i=addrs[0].name, e=e)

    # -- the packet socket -------------------------------------------------------------------
    def _refresh(self) -> None:
        """Our addresses and the served names, recomputed when the interfaces changed
        (Interfaces.refresh replaces its table on any change)."""
        table = self.interfaces.by_index
        if table is self._table:
            return
        self._table = table
        addrs = [a for group in table.values() for a in group]
        self._served = {a.name for a in addrs}
        self._ours = frozenset([a.address for a in addrs] + ([self.server] if self.server else []))
        self._macs = {}

    def _mac_of(self, name: str) -> bytes | None:
        if name not in self._macs:
            try:
                raw = fcntl.ioctl(self.sock.fileno(), SIOCGIFHWADDR,
                                  struct.pack("256s", name.encode()[:15]))
                self._macs[name] = raw[18:24]
            except OSError:
                self._macs[name] = None
        return self._macs[name]

    def doRead(self) -> None:
        self._refresh()
        for _ in range(READ_BATCH):
            try:
                data, (ifname, _, pkttype, _, hwaddr) = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warn("rogue watch socket: {e}", e=e)
                return
            if ifname not in self._served:          # the filter already dropped what we send
                continue
            seen = rogue.sighting(ifname, data, hwaddr[:6])
            if seen is not None:
                verdict = self.detector.observe(seen, self.clock(), self._ours, self._mac_of(ifname))
                self._judge(verdict)

    def _judge(self, verdict: rogue.Verdict) -> None:
        if not verdict.new:   # ours, known, or a rogue already logged: only counted
            return
        r = verdict.rogue
        if verdict.crowded:   # a spoofing tool inventing servers: one line a minute, not one each
            hidden = self.crowded.admit("crowded", self.clock())
            if hidden is None:
                return
            log.warn("more than {n} rogue DHCP servers within the hour (spoofed?); latest: "
                     "{line}{more}", n=self.detector.max_servers, line=rogue.describe(verdict,
                     self.probe_mac), more=suffix(hidden))
            return
        log.warn("{line}", line=rogue.describe(verdict, self.probe_mac),
                 server_ip=str(r.server_ip), server_mac=r.server_mac, interface=r.interface)

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "dhcp-rogue-watch"

    def connectionLost(self, reason):
        if self.sock is not None:
            self.sock.close()
