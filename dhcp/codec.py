"""BOOTP/DHCP wire format (RFC 951, 2131, 2132, 3396). Pure stdlib: bytes ⇄ Message.

Input: option overload (52) moves options into file/sname; repeated options are concatenated
(RFC 3396) in the order options field, file, sname. Output: options longer than 255 bytes are
split; a size limit (client's option 57) is honoured by overloading file/sname when they are
unused and then dropping the options that do not fit (callers order options by priority).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property
from ipaddress import IPv4Address

from dhcp import options as O

MAGIC = b"\x63\x82\x53\x63"
HEADER = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")  # 236 bytes
MIN_PACKET = 300  # BOOTP minimum; some PXE ROMs drop shorter replies
ZERO = IPv4Address(0)
BOOTREQUEST, BOOTREPLY = 1, 2
BROADCAST_FLAG = 0x8000


class ProtocolError(ValueError):
    """A packet that is not a well-formed BOOTP/DHCP message."""


@dataclass(frozen=True)
class Message:
    op: int = BOOTREQUEST
    xid: int = 0
    chaddr: bytes = b""          # hardware address, hlen bytes (no padding)
    htype: int = 1
    hops: int = 0
    secs: int = 0
    flags: int = 0
    ciaddr: IPv4Address = ZERO
    yiaddr: IPv4Address = ZERO
    siaddr: IPv4Address = ZERO
    giaddr: IPv4Address = ZERO
    sname: bytes = b""           # NUL-stripped; empty when overloaded with options
    file: bytes = b""
    options: tuple[tuple[int, bytes], ...] = field(default=())  # in wire order, concatenated

    @cached_property
    def optmap(self) -> dict[int, bytes]:
        return dict(self.options)

    def get(self, code: int) -> bytes | None:
        return self.optmap.get(code)

    @property
    def msg_type(self) -> int | None:
        raw = self.optmap.get(O.MESSAGE_TYPE)
        return raw[0] if raw and len(raw) == 1 else None

    @property
    def mac(self) -> str:
        return ":".join(f"{b:02x}" for b in self.chaddr)

    @property
    def client_key(self) -> bytes:
        """Lease identity: option 61 when present (RFC 2131 §4.2), else htype + chaddr."""
        cid = self.optmap.get(O.CLIENT_ID)
        return b"\xff" + cid if cid else bytes((self.htype,)) + self.chaddr

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & BROADCAST_FLAG)


def _walk(area: bytes, found: dict[int, bytearray], where: str) -> None:
    i, n = 0, len(area)
    while i < n:
        code = area[i]
        if code == O.PAD:
            i += 1
            continue
        if code == O.END:
            return
        if i + 1 >= n:
            raise ProtocolError(f"option {code} truncated in {where}")
        length = area[i + 1]
        end = i + 2 + length
        if end > n:
            raise ProtocolError(f"option {code} length {length} runs past the end of {where}")
        if code in found:
            found[code] += area[i + 2:end]
        else:
            found[code] = bytearray(area[i + 2:end])
        i = end
    # A missing END is tolerated: several PXE ROMs omit it.


def _addr(raw: bytes) -> IPv4Address:
    return ZERO if raw == b"\0\0\0\0" else IPv4Address(raw)  # most are zero: skip the parse


def decode(data: bytes) -> Message:
    if len(data) < HEADER.size:
        raise ProtocolError(f"packet of {len(data)} bytes is shorter than a BOOTP header")
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr, sname,
     file) = HEADER.unpack_from(data)
    if op not in (BOOTREQUEST, BOOTREPLY):
        raise ProtocolError(f"op {op} is neither BOOTREQUEST nor BOOTREPLY")
    if hlen > 16:
        raise ProtocolError(f"hardware address length {hlen} > 16")
    found: dict[int, bytearray] = {}
    if len(data) >= HEADER.size + 4 and data[HEADER.size:HEADER.size + 4] == MAGIC:
        _walk(data[HEADER.size + 4:], found, "options")
        overload = found.pop(O.OVERLOAD, None)
        if overload is not None:
            if len(overload) != 1 or overload[0] not in (1, 2, 3):
                raise ProtocolError(f"bad option overload value {bytes(overload)!r}")
            if overload[0] & 1:
                _walk(file, found, "file")
                file = b""
            if overload[0] & 2:
                _walk(sname, found, "sname")
                sname = b""
    return Message(
        op=op, xid=xid, chaddr=chaddr[:hlen], htype=htype, hops=hops, secs=secs, flags=flags,
        ciaddr=_addr(ciaddr), yiaddr=_addr(yiaddr), siaddr=_addr(siaddr), giaddr=_addr(giaddr), sname=sname.split(b"\0", 1)[0], file=file.split(b"\0", 1)[0],
        options=tuple((code, bytes(value)) for code, value in found.items()))


def _encode_option(code: int, value: bytes) -> bytes:
    if len(value) <= 255:
        return bytes((code, len(value))) + value
    # RFC 3396: a long value is split into several instances of the same option.
    return b"".join(bytes((code, len(value[i:i + 255]))) + value[i:i + 255]
                    for i in range(0, len(value), 255))


def encode(msg: Message, max_size: int | None = None) -> bytes:
    """Serialise; max_size is the whole DHCP payload limit (option 57 minus IP/UDP headers)."""
    if len(msg.chaddr) > 16:
        raise ProtocolError("chaddr longer than 16 bytes")
    if len(msg.sname) > 64 or len(msg.file) > 128:
        raise ProtocolError("sname or file field too long")
    limit = max(max_size or 0, 0) or 65535
    encoded = [_encode_option(code, value) for code, value in msg.options
               if code not in (O.PAD, O.END, O.OVERLOAD)]
    room = limit - HEADER.size - len(MAGIC) - 1  # END
    main: list[bytes] = []
    spill: list[bytes] = []
    used = 0
    for chunk in encoded:
        if used + len(chunk) <= room:
            main.append(chunk)
            used += len(chunk)
        else:
            spill.append(chunk)
    sname, file = msg.sname, msg.file
    if spill:
        # Overload the unused fixed fields (file first, as RFC 3396 reads them), then drop.
        areas = []
        if not file:
            areas.append([127, [], 1])  # 128 bytes minus END
        if not sname:
            areas.append([63, [], 2])
        if areas and used + 3 <= room:
            used += 3
            for chunk in spill:
                for area in areas:
                    if len(chunk) <= area[0]:
                        area[1].append(chunk)
                        area[0] -= len(chunk)
                        break
            flag = 0
            for free, chunks, bit in areas:
                if chunks:
                    flag |= bit
                    body = b"".join(chunks) + bytes((O.END,))
                    if bit == 1:
                        file = body
                    else:
                        sname = body
            if flag:
                main.insert(0, bytes((O.OVERLOAD, 1, flag)))
    head = HEADER.pack(msg.op, msg.htype, len(msg.chaddr), msg.hops, msg.xid, msg.secs, msg.flags,
                       msg.ciaddr.packed, msg.yiaddr.packed, msg.siaddr.packed, msg.giaddr.packed,
                       msg.chaddr.ljust(16, b"\0"), sname.ljust(64, b"\0"), file.ljust(128, b"\0"))
    out = head + MAGIC + b"".join(main) + bytes((O.END,))
    if len(out) < MIN_PACKET:
        out += bytes(MIN_PACKET - len(out))
    return out
