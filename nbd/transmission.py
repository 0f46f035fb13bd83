"""Transmission phase, pure: request bytes in, reply actions out.

Actions are small tuples (this is the hot path):
  (READ, header, offset, length)  send header, then `length` bytes of the export at `offset`
  (REPLY, data)                   send data
  (CACHE, offset, length, data)   read-ahead hint for the range, then send data
  (DISC,)                         finish the replies before this one, then close

A connection that ends is summed up in a SessionRecord (its log line, the boot report, metrics).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import codec as c
from .handshake import MAX_REQUEST
from bootserverd.ops.transfers import Transfer

READ, REPLY, CACHE, DISC = range(4)


@dataclass(frozen=True)
class SessionRecord:
    """What one connection did, when it ends."""
    client: str                     # "host:port"
    export: str | None              # None: it left during negotiation
    bytes_sent: int
    requests: int
    seconds: float
    reason: str
    outcome: str = "done"           # done (the client ended it) | aborted | no_export
    options: tuple[str, ...] = ()   # the options it negotiated, in order

    @staticmethod
    def outcome_of(attached: bool, ended_by_client: bool) -> str:
        return "no_export" if not attached else "done" if ended_by_client else "aborted"

    @staticmethod
    def why_closed(our_reason: str | None, closed_softly: bool, client_done: bool, error: str,
                   unanswered: int) -> tuple[str, bool]:
        """(the reason for the log, whether the client ended it): ours when we closed, else what
        the socket said (``client_done``: a clean close by the peer)."""
        if our_reason is not None:
            return our_reason, closed_softly        # soft: we closed after the client's DISC
        why = "client closed the connection" if client_done else f"connection lost: {error}"
        return why + (f" mid-reply ({unanswered} replies unsent)" if unanswered else ""), client_done

    def as_transfer(self) -> Transfer:
        what = f"NBD {self.export or '-'} closed after {self.bytes_sent} bytes: {self.reason}"
        return Transfer("nbd", self.client.rsplit(":", 1)[0], self.export or "", self.bytes_sent, self.seconds,
                        self.outcome, self.export is not None, what)

    def summary(self) -> str:
        if self.export is None:
            return (f"left during negotiation after {self.seconds:.1f} s "
                    f"(options {','.join(self.options) or 'none'}): {self.reason}")
        rate = self.bytes_sent / self.seconds / 1e6 if self.seconds > 0 else 0.0
        return (f"export {self.export!r} disconnected: {self.bytes_sent / 1e6:.1f} MB in "
                f"{self.requests} requests, {self.seconds:.1f} s ({rate:.1f} MB/s), {self.reason}")


_HDR = c.REQUEST.size
_unpack = c.REQUEST.unpack_from


class RequestParser:
    """Splits the byte stream into requests; WRITE payloads are discarded as they arrive
    (a read-only export never needs them, and buffering them would let a client make
    us hold arbitrary amounts of memory)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skip = 0
        self.stopped = False        # set after DISC: nothing more is parsed

    def feed(self, data: bytes) -> list[tuple[int, int, int, int, int]]:
        """Returns [(flags, cmd, handle, offset, length), ...]; raises ProtocolError."""
        if self.stopped:
            return []
        if self._skip:
            n = min(self._skip, len(data))
            self._skip -= n
            data = data[n:]
        buf = self._buf
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= _HDR:
            magic, flags, cmd, handle, offset, length = _unpack(buf, pos)
            if magic != c.REQUEST_MAGIC:
                raise c.ProtocolError(f"bad request magic 0x{magic:08x}")
            pos += _HDR
            out.append((flags, cmd, handle, offset, length))
            if cmd == c.CMD_WRITE:
                n = min(length, end - pos)
                pos += n
                if n < length:
                    self._skip = length - n
                    break
            elif cmd == c.CMD_DISC:
                self.stopped = True     # the client MUST NOT send anything after DISC
                pos = end
                break
        del buf[:pos]
        return out

    def pending(self) -> tuple[bytes, int]:
        """(bytes of a request read in part, WRITE payload bytes still to discard): what a
        restarted daemon must know to parse on where this one stopped."""
        return bytes(self._buf), self._skip

    def partial(self) -> int | None:
        """Bytes of a request begun in part; None while a WRITE payload is being discarded."""
        return None if self._skip else len(self._buf)

    def resume(self, buffered: bytes, skip: int) -> None:
        self._buf[:0] = buffered
        self._skip = skip


_FLAGS_OK = {
    c.CMD_READ: c.CMD_FLAG_FUA,          # DF added when structured replies are on
    c.CMD_FLUSH: c.CMD_FLAG_FUA,
    c.CMD_CACHE: c.CMD_FLAG_FUA,
    c.CMD_BLOCK_STATUS: c.CMD_FLAG_FUA | c.CMD_FLAG_REQ_ONE,
    c.CMD_DISC: c.CMD_FLAG_FUA,
}
_WRITES = (c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES)


class Transmission:
    """Decides the reply to each request of one session on one export."""

    def __init__(self, size: int, structured: bool, contexts: dict[int, str],
                 max_request: int = MAX_REQUEST) -> None:
        self.size = size
        self.structured = structured
        self.contexts = contexts
        self.max_request = max_request
        self._read_flags = c.CMD_FLAG_FUA | (c.CMD_FLAG_DF if structured else 0)

    def error(self, handle: int, errno: int, message: str) -> tuple:
        if self.structured:
            return (REPLY, c.error_chunk(handle, errno, message))
        return (REPLY, c.simple_reply(handle, errno))

    def _range_error(self, offset: int, length: int) -> str | None:
        if length == 0:
            return "zero length"
        if length > self.max_request:
            return f"length {length} over the maximum {self.max_request}"
        if offset + length > self.size:
            return f"range {offset}+{length} past the end ({self.size})"
        return None

    def handle(self, flags: int, cmd: int, handle: int, offset: int, length: int) -> tuple:
        if cmd == c.CMD_READ:
            # Hot path: checks inlined.
            if (flags & ~self._read_flags or length == 0 or length > self.max_request
                    or offset + length > self.size):
                if flags & ~self._read_flags:
                    return self.error(handle, c.EINVAL, f"bad flags 0x{flags:x} on READ")
                return self.error(handle, c.EINVAL, self._range_error(offset, length))
            if self.structured:
                return (READ, c.data_chunk_header(handle, offset, length), offset, length)
            return (READ, c.simple_reply(handle), offset, length)
        if cmd in _WRITES:
            return self.error(handle, c.EPERM, "export is read-only")
        if cmd == c.CMD_DISC:
            return (DISC,)
        allowed = _FLAGS_OK.get(cmd)
        if allowed is None:
            return self.error(handle, c.EINVAL, f"unknown command {cmd}")
        if flags & ~allowed:
            return self.error(handle, c.EINVAL,
                              f"bad flags 0x{flags:x} on {c.CMD_NAMES[cmd]}")
        if cmd == c.CMD_FLUSH:
            return (REPLY, self._ok(handle))
        if cmd == c.CMD_CACHE:
            problem = self._range_error(offset, length)
            if problem:
                return self.error(handle, c.EINVAL, problem)
            return (CACHE, offset, length, self._ok(handle))
        # BLOCK_STATUS: no maximum (it moves no data), only the export's bounds.
        if not self.contexts:
            return self.error(handle, c.EINVAL, "no metadata context negotiated")
        if length == 0 or offset + length > self.size:
            return self.error(handle, c.EINVAL,
                              f"range {offset}+{length} past the end ({self.size})")
        # An image file is fully allocated data: status 0 is always correct.
        (cid,) = self.contexts      # the handshake offers exactly one context
        return (REPLY, c.block_status_chunk(handle, cid, ((length, 0),)))

    def _ok(self, handle: int) -> bytes:
        return c.none_chunk(handle) if self.structured else c.simple_reply(handle)
