"""ICMP echo (RFC 792) for the DHCP conflict probe (dhcp.ping_check): the echo request and
reply bytes (pure functions), and `IcmpProber`, the socket that sends one and waits for its
answer in the reactor."""

from __future__ import annotations

import os
import socket
import struct
from ipaddress import IPv4Address
from typing import Callable

from twisted.logger import Logger

ECHO_REPLY, ECHO_REQUEST = 0, 8
HEADER = struct.Struct("!BBHHH")   # type, code, checksum, identifier, sequence
READ_BATCH = 128                   # replies read per doRead, bounded

log = Logger()


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071): ones' complement of the ones' complement sum."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"bootserverd conflict probe") -> bytes:
    body = HEADER.pack(ECHO_REQUEST, 0, 0, ident & 0xFFFF, seq & 0xFFFF) + payload
    return body[:2] + struct.pack("!H", checksum(body)) + body[4:]


def parse_echo_reply(data: bytes, ip_header: bool) -> tuple[int, int] | None:
    """(identifier, sequence) of an echo reply, or None for anything else. A raw socket
    hands over the IP header too; a ping (SOCK_DGRAM) socket only the ICMP message."""
    if ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            return None
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < HEADER.size:
        return None
    kind, code, _, ident, seq = HEADER.unpack_from(data)
    if kind != ECHO_REPLY or code != 0 or checksum(data) != 0:
        return None
    return ident, seq


class IcmpProber:
    """ICMP echo for the conflict probe: a ping socket (SOCK_DGRAM, when
    net.ipv4.ping_group_range admits our group), else a raw socket (CAP_NET_RAW). Opened
    before privileges are dropped. One probe per address at a time (the machine's rule)."""

    def __init__(self, reactor=None):
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
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
        """Echo `ip`; `callback(answered)` once, on its reply or after `timeout` s."""
        self.seq = (self.seq + 1) & 0xFFFF
        try:
            self.sock.sendto(echo_request(self.ident, self.seq), (str(ip), 0))
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
            reply = parse_echo_reply(data, self.raw)
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
