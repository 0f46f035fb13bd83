"""NBD wire format (doc/proto.md of NetworkBlockDevice/nbd): constants and
bytes <-> values. Pure stdlib: no sockets, files or clock."""

from __future__ import annotations

import struct
from dataclasses import dataclass


class ProtocolError(Exception):
    """The peer broke a mandatory rule; the only answer is a hard disconnect."""


# --- magics ---------------------------------------------------------------
NBDMAGIC = 0x4E42444D41474943          # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054          # "IHAVEOPT"
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# --- handshake flags (server, 16 bits) and client flags (32 bits) ----------
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

# --- transmission flags -----------------------------------------------------
FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_RESIZE = 1 << 9
FLAG_SEND_CACHE = 1 << 10

# --- options ----------------------------------------------------------------
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
# 9 and 10 as in current proto.md, qemu and libnbd (an old draft had BLOCK_SIZE at 9).
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

OPTION_NAMES = {
    OPT_EXPORT_NAME: "EXPORT_NAME", OPT_ABORT: "ABORT", OPT_LIST: "LIST",
    OPT_STARTTLS: "STARTTLS", OPT_INFO: "INFO", OPT_GO: "GO",
    OPT_STRUCTURED_REPLY: "STRUCTURED_REPLY",
    OPT_LIST_META_CONTEXT: "LIST_META_CONTEXT",
    OPT_SET_META_CONTEXT: "SET_META_CONTEXT",
}

# --- option replies -----------------------------------------------------------
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
_ERR = 1 << 31
REP_ERR_UNSUP = _ERR + 1
REP_ERR_POLICY = _ERR + 2
REP_ERR_INVALID = _ERR + 3
REP_ERR_PLATFORM = _ERR + 4
REP_ERR_TLS_REQD = _ERR + 5
REP_ERR_UNKNOWN = _ERR + 6
REP_ERR_SHUTDOWN = _ERR + 7
REP_ERR_BLOCK_SIZE_REQD = _ERR + 8
REP_ERR_TOO_BIG = _ERR + 9

# --- NBD_REP_INFO types --------------------------------------------------------
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# --- commands and command flags ---------------------------------------------------
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_NAMES = {
    CMD_READ: "READ", CMD_WRITE: "WRITE", CMD_DISC: "DISC", CMD_FLUSH: "FLUSH",
    CMD_TRIM: "TRIM", CMD_CACHE: "CACHE", CMD_WRITE_ZEROES: "WRITE_ZEROES",
    CMD_BLOCK_STATUS: "BLOCK_STATUS",
}

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

# --- structured reply chunks ----------------------------------------------------
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

# --- errors (errno values fixed by the spec) ---------------------------------------
EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

META_BASE_ALLOCATION = "base:allocation"

MAX_STRING = 4096  # spec: strings MUST be no longer than 4096 bytes

# --- sizes ---------------------------------------------------------------------------
OPTION_HEADER = struct.Struct(">QII")          # magic, option, length
OPTION_REPLY_HEADER = struct.Struct(">QIII")   # magic, option, type, length
REQUEST = struct.Struct(">IHHQQI")             # magic, flags, type, handle, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")           # magic, error, handle
CHUNK_HEADER = struct.Struct(">IHHQI")         # magic, flags, type, handle, length
DATA_CHUNK_HEADER = struct.Struct(">IHHQIQ")   # chunk header + offset of OFFSET_DATA
CLIENT_FLAGS = struct.Struct(">I")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def greeting(flags: int = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) -> bytes:
    """Server's first 18 bytes of the newstyle handshake."""
    return struct.pack(">QQH", NBDMAGIC, IHAVEOPT, flags)


def option_request(option: int, data: bytes = b"") -> bytes:
    """Client option (used by tests and as the codec's round-trip partner)."""
    return OPTION_HEADER.pack(IHAVEOPT, option, len(data)) + data


def option_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    return OPTION_REPLY_HEADER.pack(OPTION_REPLY_MAGIC, option, reply, len(data)) + data


def export_name_reply(size: int, flags: int, no_zeroes: bool) -> bytes:
    """Answer to NBD_OPT_EXPORT_NAME (no option-reply header)."""
    return struct.pack(">QH", size, flags) + (b"" if no_zeroes else bytes(124))


def rep_server(name: str) -> bytes:
    raw = name.encode()
    return _U32.pack(len(raw)) + raw


def info_export(size: int, flags: int) -> bytes:
    return struct.pack(">HQH", INFO_EXPORT, size, flags)


def info_name(name: str) -> bytes:
    return _U16.pack(INFO_NAME) + name.encode()


def info_description(text: str) -> bytes:
    return _U16.pack(INFO_DESCRIPTION) + text.encode()


def info_block_size(minimum: int, preferred: int, maximum: int) -> bytes:
    return struct.pack(">HIII", INFO_BLOCK_SIZE, minimum, preferred, maximum)


def meta_context(context_id: int, name: str) -> bytes:
    return _U32.pack(context_id) + name.encode()


@dataclass(frozen=True)
class InfoRequest:
    """Payload of NBD_OPT_INFO / NBD_OPT_GO."""
    name: str
    requests: tuple[int, ...]


@dataclass(frozen=True)
class MetaContextRequest:
    """Payload of NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT."""
    name: str
    queries: tuple[str, ...]


def _string(raw: bytes, what: str) -> str:
    if len(raw) > MAX_STRING:
        raise ValueError(f"{what} longer than {MAX_STRING} bytes")
    if b"\0" in raw:
        raise ValueError(f"{what} contains NUL")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None


def parse_export_name(data: bytes) -> str:
    return _string(data, "export name")


def parse_info_request(data: bytes) -> InfoRequest:
    """Raises ValueError on a malformed payload (→ NBD_REP_ERR_INVALID)."""
    if len(data) < 6:
        raise ValueError("INFO/GO payload shorter than 6 bytes")
    (name_len,) = _U32.unpack_from(data, 0)
    if 4 + name_len + 2 > len(data):
        raise ValueError("export name length runs past the option")
    name = _string(data[4:4 + name_len], "export name")
    pos = 4 + name_len
    (count,) = _U16.unpack_from(data, pos)
    pos += 2
    if len(data) != pos + 2 * count:
        raise ValueError("information request count does not match the length")
    requests = struct.unpack_from(f">{count}H", data, pos)
    return InfoRequest(name, tuple(requests))


def parse_meta_context_request(data: bytes) -> MetaContextRequest:
    if len(data) < 8:
        raise ValueError("meta context payload shorter than 8 bytes")
    (name_len,) = _U32.unpack_from(data, 0)
    if 4 + name_len + 4 > len(data):
        raise ValueError("export name length runs past the option")
    name = _string(data[4:4 + name_len], "export name")
    pos = 4 + name_len
    (count,) = _U32.unpack_from(data, pos)
    pos += 4
    queries = []
    for _ in range(count):
        if pos + 4 > len(data):
            raise ValueError("query count runs past the option")
        (qlen,) = _U32.unpack_from(data, pos)
        pos += 4
        if pos + qlen > len(data):
            raise ValueError("query length runs past the option")
        queries.append(_string(data[pos:pos + qlen], "query"))
        pos += qlen
    if pos != len(data):
        raise ValueError("trailing bytes after the last query")
    return MetaContextRequest(name, tuple(queries))


# --- transmission -----------------------------------------------------------------------

def request(cmd: int, handle: int, offset: int = 0, length: int = 0, flags: int = 0) -> bytes:
    return REQUEST.pack(REQUEST_MAGIC, flags, cmd, handle, offset, length)


def simple_reply(handle: int, error: int = 0) -> bytes:
    return SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


def data_chunk_header(handle: int, offset: int, length: int) -> bytes:
    """Final NBD_REPLY_TYPE_OFFSET_DATA chunk header; *length* data bytes follow."""
    return DATA_CHUNK_HEADER.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE,
                                  REPLY_TYPE_OFFSET_DATA, handle, 8 + length, offset)


def none_chunk(handle: int) -> bytes:
    return CHUNK_HEADER.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_NONE, handle, 0)


def error_chunk(handle: int, error: int, message: str = "") -> bytes:
    msg = message.encode()[:4096]
    payload = struct.pack(">IH", error, len(msg)) + msg
    return CHUNK_HEADER.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_ERROR,
                             handle, len(payload)) + payload


def block_status_chunk(handle: int, context_id: int,
                       extents: tuple[tuple[int, int], ...]) -> bytes:
    payload = _U32.pack(context_id) + b"".join(struct.pack(">II", n, s) for n, s in extents)
    return CHUNK_HEADER.pack(STRUCTURED_REPLY_MAGIC, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS,
                             handle, len(payload)) + payload
