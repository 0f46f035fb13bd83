"""DHCP option codes (RFC 2132, 3004, 3046, 4578, iPXE) and value encoders/decoders.

Pure stdlib. Values travel as raw bytes inside a Message; these helpers convert them.
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

PAD = 0
SUBNET_MASK = 1
ROUTER = 3
DNS = 6
HOSTNAME = 12
DOMAIN = 15
BROADCAST = 28
NTP = 42
VENDOR_SPECIFIC = 43
REQUESTED_IP = 50
LEASE_TIME = 51
OVERLOAD = 52
MESSAGE_TYPE = 53
SERVER_ID = 54
PARAM_REQUEST = 55
MESSAGE = 56
MAX_SIZE = 57
RENEWAL_T1 = 58
REBINDING_T2 = 59
VENDOR_CLASS = 60
CLIENT_ID = 61
TFTP_SERVER = 66
BOOTFILE = 67
USER_CLASS = 77
RELAY_AGENT = 82
CLIENT_ARCH = 93
CLIENT_NDI = 94
CLIENT_UUID = 97
IPXE_ENCAP = 175
END = 255

# Message types (option 53).
DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = range(1, 9)
TYPE_NAMES = {DISCOVER: "DISCOVER", OFFER: "OFFER", REQUEST: "REQUEST", DECLINE: "DECLINE",
              ACK: "ACK", NAK: "NAK", RELEASE: "RELEASE", INFORM: "INFORM"}


def ip(addr: IPv4Address | str) -> bytes:
    return addr.packed if isinstance(addr, IPv4Address) else IPv4Address(addr).packed


def ips(addrs) -> bytes:
    return b"".join(IPv4Address(a).packed for a in addrs)


def u8(value: int) -> bytes:
    return bytes((value,))


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def u32(value: int) -> bytes:
    return struct.pack("!I", value)


def text(value: str) -> bytes:
    return value.encode("utf-8", "replace")


def to_ip(raw: bytes | None) -> IPv4Address | None:
    return IPv4Address(raw) if raw is not None and len(raw) == 4 else None


def to_u16s(raw: bytes | None) -> tuple[int, ...]:
    if not raw or len(raw) % 2:
        return ()
    return struct.unpack(f"!{len(raw) // 2}H", raw)


def to_u16(raw: bytes | None) -> int | None:
    return struct.unpack("!H", raw)[0] if raw is not None and len(raw) == 2 else None


def to_text(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def user_classes(raw: bytes | None) -> tuple[bytes, ...]:
    """Option 77: RFC 3004 length-prefixed list, or the bare string iPXE and others send."""
    if not raw:
        return ()
    out, i = [], 0
    while i < len(raw):
        n = raw[i]
        if n == 0 or i + 1 + n > len(raw):
            return (raw,)  # not RFC 3004 framing: one opaque class
        out.append(raw[i + 1:i + 1 + n])
        i += 1 + n
    return tuple(out)


def suboptions(raw: bytes | None) -> dict[int, bytes]:
    """Encapsulated code/length/value list (43, 82, 175); tolerant of a trailing END/PAD."""
    out: dict[int, bytes] = {}
    if not raw:
        return out
    i = 0
    while i < len(raw):
        code = raw[i]
        if code == PAD:
            i += 1
            continue
        if code == END or i + 1 >= len(raw):
            break
        n = raw[i + 1]
        out[code] = out.get(code, b"") + raw[i + 2:i + 2 + n]
        i += 2 + n
    return out


def encode_suboptions(items) -> bytes:
    return b"".join(bytes((code, len(value))) + value for code, value in items)
