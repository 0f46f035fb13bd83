"""The client side of the NBD handshake, as bytes (pure: no sockets, no clock).

What the reconnect helper (bootserverd_client.nbdkeeper) says to the server before it hands
the socket to the kernel: fixed newstyle, one ``NBD_OPT_GO`` for the same export, no
structured replies (the kernel's client reads simple replies only), no TLS. After the
server's ``NBD_REP_ACK`` the socket is in the transmission phase, where the kernel takes over.

``negotiate(recv_exact, send, export)`` drives the exchange through two callables, so the
tests give it canned server bytes and check what it wrote.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

NBDMAGIC = 0x4E42444D41474943            # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054            # "IHAVEOPT"
REPLY_MAGIC = 0x0003E889045565A9         # option reply magic

FLAG_FIXED_NEWSTYLE = 1 << 0             # handshake flags (server) and client flags
FLAG_NO_ZEROES = 1 << 1

OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_FLAG_ERROR = 1 << 31
INFO_EXPORT = 0

TFLAG_READ_ONLY = 1 << 1                 # transmission flags

ERRORS = {REP_FLAG_ERROR | 1: "UNSUP", REP_FLAG_ERROR | 2: "POLICY", REP_FLAG_ERROR | 3: "INVALID",
          REP_FLAG_ERROR | 4: "PLATFORM", REP_FLAG_ERROR | 5: "TLS_REQD", REP_FLAG_ERROR | 6: "UNKNOWN",
          REP_FLAG_ERROR | 7: "SHUTDOWN", REP_FLAG_ERROR | 8: "BLOCK_SIZE_REQD", REP_FLAG_ERROR | 9: "TOO_BIG"}

SERVER_HELLO = struct.Struct(">QQH")     # NBDMAGIC, IHAVEOPT, handshake flags
OPTION = struct.Struct(">QII")           # IHAVEOPT, option, length
REPLY = struct.Struct(">QIII")           # magic, option, reply type, length
MAX_REPLY = 64 * 1024                    # an option reply larger than this is not a sane server
MAX_REPLIES = 64                         # replies to one GO before its ACK


class HandshakeError(Exception):
    """The server did not give us the export, or spoke something else."""


@dataclass(frozen=True)
class Export:
    size: int            # bytes
    flags: int           # transmission flags


def parse_server_hello(data: bytes) -> int:
    """The 18 bytes the server sends first → its handshake flags."""
    magic, opt, flags = SERVER_HELLO.unpack(data)
    if magic != NBDMAGIC:
        raise HandshakeError(f"not an NBD server (magic {magic:#x})")
    if opt != IHAVEOPT:
        raise HandshakeError("oldstyle server: no NBD_OPT_GO")
    if not flags & FLAG_FIXED_NEWSTYLE:
        raise HandshakeError("server without fixed newstyle")
    return flags


def client_flags(server_flags: int) -> bytes:
    """Our 4 bytes: fixed newstyle, and no zeroes when the server offers it."""
    return struct.pack(">I", FLAG_FIXED_NEWSTYLE | (server_flags & FLAG_NO_ZEROES))


def opt_go(export: str) -> bytes:
    """NBD_OPT_GO for ``export``, asking for no extra information (the server sends
    NBD_INFO_EXPORT anyway)."""
    name = export.encode("utf-8")
    data = struct.pack(">I", len(name)) + name + struct.pack(">H", 0)
    return OPTION.pack(IHAVEOPT, OPT_GO, len(data)) + data


def parse_reply_header(data: bytes) -> tuple[int, int, int]:
    """20 bytes → (option, reply type, payload length)."""
    magic, option, kind, length = REPLY.unpack(data)
    if magic != REPLY_MAGIC:
        raise HandshakeError(f"bad option reply magic {magic:#x}")
    if option != OPT_GO:
        raise HandshakeError(f"reply to option {option}, not GO")
    if length > MAX_REPLY:
        raise HandshakeError(f"option reply of {length} bytes")
    return option, kind, length


def parse_info(payload: bytes) -> Export | None:
    """An NBD_REP_INFO payload → the export's size and flags (None for other info types)."""
    if len(payload) < 2:
        raise HandshakeError("short NBD_REP_INFO")
    (kind,) = struct.unpack_from(">H", payload)
    if kind != INFO_EXPORT:
        return None
    if len(payload) != 12:
        raise HandshakeError(f"NBD_INFO_EXPORT of {len(payload)} bytes")
    size, flags = struct.unpack_from(">QH", payload, 2)
    return Export(size, flags)


def describe_error(kind: int, payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")[:200]
    return f"NBD_REP_ERR_{ERRORS.get(kind, hex(kind))}" + (f": {text}" if text else "")


def negotiate(recv_exact: Callable[[int], bytes], send: Callable[[bytes], None], export: str) -> Export:
    """Fixed-newstyle handshake up to the transmission phase on ``export``.

    ``recv_exact(n)`` returns exactly n bytes (or raises); ``send(data)`` writes all of it.
    Raises HandshakeError when the server refuses or speaks something else."""
    flags = parse_server_hello(recv_exact(SERVER_HELLO.size))
    send(client_flags(flags) + opt_go(export))
    found: Export | None = None
    for _ in range(MAX_REPLIES):
        _, kind, length = parse_reply_header(recv_exact(REPLY.size))
        payload = recv_exact(length) if length else b""
        if kind == REP_ACK:
            if found is None:
                raise HandshakeError("NBD_REP_ACK without NBD_INFO_EXPORT")
            return found
        if kind == REP_INFO:
            found = parse_info(payload) or found
        elif kind & REP_FLAG_ERROR:
            # the caller retries every error: another server may hold the address later
            raise HandshakeError(f"export {export!r}: {describe_error(kind, payload)}")
        else:
            raise HandshakeError(f"unexpected reply type {kind} to NBD_OPT_GO")
    raise HandshakeError(f"more than {MAX_REPLIES} replies to NBD_OPT_GO")
