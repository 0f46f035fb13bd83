"""TFTP wire format (RFC 1350, 2347, 2348, 2349, 7440): bytes <-> frozen dataclasses.

Pure stdlib. Hot-path helpers (`encode_data`, `ack_block`) skip the dataclasses.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

# Error codes (RFC 1350 + RFC 2347).
E_UNDEFINED = 0
E_NOT_FOUND = 1
E_ACCESS = 2
E_DISK_FULL = 3
E_ILLEGAL = 4
E_UNKNOWN_TID = 5
E_EXISTS = 6
E_NO_USER = 7
E_OPTION = 8

MODES = ("netascii", "octet", "mail")

_HDR = struct.Struct("!HH")
_pack_hdr = _HDR.pack
_unpack_hdr = _HDR.unpack_from


class ProtocolError(Exception):
    """A packet that is not valid TFTP."""


@dataclass(frozen=True)
class Request:
    opcode: int               # RRQ or WRQ
    filename: str             # UTF-8, undecodable bytes kept as surrogates (see decode)
    mode: str                 # lower-cased
    options: tuple[tuple[str, str], ...] = ()   # names lower-cased, in request order


@dataclass(frozen=True)
class Data:
    block: int
    payload: bytes


@dataclass(frozen=True)
class Ack:
    block: int


@dataclass(frozen=True)
class Error:
    code: int
    message: str


@dataclass(frozen=True)
class OAck:
    options: tuple[tuple[str, str], ...]


Packet = Request | Data | Ack | Error | OAck


def _strings(body: bytes) -> list[bytes]:
    if not body.endswith(b"\0"):
        raise ProtocolError("string field not NUL-terminated")
    return body[:-1].split(b"\0")


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError(f"{what} is not ASCII") from None


def _options(fields: list[bytes]) -> tuple[tuple[str, str], ...]:
    if len(fields) % 2:
        raise ProtocolError("option without a value")
    out = []
    for i in range(0, len(fields), 2):
        name = _ascii(fields[i], "option name").lower()
        if not name:
            raise ProtocolError("empty option name")
        out.append((name, _ascii(fields[i + 1], "option value")))
    return tuple(out)


def decode(packet: bytes) -> Packet:
    """Decode one datagram; raise ProtocolError if it is not valid TFTP."""
    if len(packet) < 4:
        raise ProtocolError(f"packet too short ({len(packet)} bytes)")
    opcode, num = _unpack_hdr(packet)
    if opcode == ACK:
        if len(packet) != 4:
            raise ProtocolError("ACK with trailing bytes")
        return Ack(num)
    if opcode == DATA:
        return Data(num, bytes(packet[4:]))
    if opcode in (RRQ, WRQ):
        fields = _strings(packet[2:])
        if len(fields) < 2:
            raise ProtocolError("request without mode")
        if not fields[0]:
            raise ProtocolError("empty filename")
        # Filenames are bytes on the wire; keep undecodable ones lossless for the file layer
        # to refuse, rather than failing here.
        filename = fields[0].decode("utf-8", "surrogateescape")
        mode = _ascii(fields[1], "mode").lower()
        return Request(opcode, filename, mode, _options(fields[2:]))
    if opcode == ERROR:
        fields = _strings(packet[4:])
        # Some peers send junk after the message's NUL; take the first string only.
        return Error(num, fields[0].decode("utf-8", "replace"))
    if opcode == OACK:
        return OAck(_options(_strings(packet[2:])))
    raise ProtocolError(f"unknown opcode {opcode}")


def encode_options(options) -> bytes:
    return b"".join(n.encode("ascii") + b"\0" + str(v).encode("ascii") + b"\0" for n, v in options)


def encode(p: Packet) -> bytes:
    if isinstance(p, Data):
        return _pack_hdr(DATA, p.block & 0xFFFF) + p.payload
    if isinstance(p, Ack):
        return _pack_hdr(ACK, p.block & 0xFFFF)
    if isinstance(p, Error):
        return encode_error(p.code, p.message)
    if isinstance(p, OAck):
        return struct.pack("!H", OACK) + encode_options(p.options)
    if isinstance(p, Request):
        return (struct.pack("!H", p.opcode) + p.filename.encode("utf-8", "surrogateescape")
                + b"\0" + p.mode.encode("ascii") + b"\0" + encode_options(p.options))
    raise TypeError(f"not a TFTP packet: {p!r}")


def encode_data(block: int, payload: bytes) -> bytes:
    """DATA for absolute block number `block` (wraps to 16 bits on the wire)."""
    return _pack_hdr(DATA, block & 0xFFFF) + payload


def encode_error(code: int, message: str) -> bytes:
    # Messages may quote a client's undecodable filename (surrogates): never fail on them.
    return _pack_hdr(ERROR, code) + message.encode("utf-8", "replace") + b"\0"


def ack_block(packet: bytes) -> int | None:
    """Block number if `packet` is a well-formed ACK, else None (hot path, no allocation)."""
    if len(packet) == 4:
        opcode, num = _unpack_hdr(packet)
        if opcode == ACK:
            return num
    return None

