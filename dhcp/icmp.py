"""ICMP echo (RFC 792) for the DHCP conflict probe: build a request, recognise its reply.
Pure: bytes in, bytes out."""

from __future__ import annotations

import struct

ECHO_REPLY, ECHO_REQUEST = 0, 8
HEADER = struct.Struct("!BBHHH")   # type, code, checksum, identifier, sequence


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
