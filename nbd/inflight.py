"""What a crashed process leaves for the next one to go on serving a connection (pure).

A SIGTERM lets the daemon finish its answers and write a ``Handover``; a kill -9 or a crash
does not. The client's kernel never resends a request, so one the dead process had read from
the socket and not answered in full would be lost and the client would wait for it forever.
Each kept connection therefore writes, into a small shared memory file kept in the fd store
with its socket (services/nbd.py), the request bytes it has read since the last moment when
every answer was in the socket (a *settle point*):

    in_base   where, in the client's byte stream, the first request not settled begins
    in_end    how far the stream has been read (the bytes in between are in the log)
    out_base  where, in our byte stream to the client, that first request's reply begins

After a crash the kernel knows how far each stream really went: ``consumed`` (bytes the dead
process took from the socket) and ``written`` (bytes it put into it; TCP_INFO and the queue
sizes, see ``nbd/tcpstate.py``). ``plan`` then parses the logged requests again, computes
their replies (they depend only on the request and the export), drops those already written,
cuts the one the process died in at the byte it reached, and answers the rest. Bytes are
logged while still in the socket (read with MSG_PEEK, then taken), so those logged and not
taken are left to be read again. It refuses only when the log cannot be trusted: bytes read
and not logged (a reader that does not log first), or an overflowing log.

Layout: magic, the active header slot, two header slots (a header is written in the inactive
slot, then the slot byte flips: a kill during a header write leaves the previous header), the
data area. Positions in the data area count from ``anchor``, moved back to 0 at every settle
point with no request begun in part, so a connection touches only the first page of it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from . import codec as c
from .transmission import CACHE, DISC, READ, REPLY, RequestParser, Transmission

MAGIC = b"BSNBDIF1"
_SLOT = struct.Struct("<QQQQQ")         # anchor, in_base, in_end, out_base, valid
_SLOT_AT = (16, 16 + _SLOT.size)
DATA = 128
CAPACITY = 1 << 17                      # > one read of the reactor (64 KiB) plus a request begun in part
SIZE = DATA + CAPACITY


class BadLog(ValueError):
    pass


class InflightLog:
    """The writer, over a writable buffer of ``SIZE`` bytes (the mmap of a memfd)."""

    def __init__(self, buf, in_base: int, out_base: int, data: bytes = b"", valid: bool = True) -> None:
        self.buf = buf
        self.slot = 0
        self.anchor = self.in_base = in_base
        self.in_end = in_base
        self.out_base = out_base
        self.valid = valid and len(data) <= CAPACITY
        if self.valid and data:
            buf[DATA:DATA + len(data)] = data
            self.in_end += len(data)
        buf[0:8] = MAGIC
        self._publish()

    def _publish(self) -> None:
        slot = self.slot ^ 1
        _SLOT.pack_into(self.buf, _SLOT_AT[slot], self.anchor, self.in_base, self.in_end, self.out_base,
                        self.valid)
        self.buf[8] = slot          # one byte: the switch to the new header cannot be torn
        self.slot = slot

    def received(self, data: bytes) -> None:
        """Bytes just read from the client: logged before they are acted upon."""
        if not self.valid:
            self.in_end += len(data)
            return
        at = self.in_end - self.anchor
        end = at + len(data)
        if end > CAPACITY:
            self.valid = False      # a deep queue of unanswered requests: a crash now loses the connection
        else:
            self.buf[DATA + at:DATA + end] = data
        self.in_end += len(data)
        self._publish()

    def settle(self, partial: int, out_pos: int) -> None:
        """Every reply so far is in the socket (``out_pos``: where the next one begins) and the
        last ``partial`` bytes read are a request begun in part."""
        in_base = self.in_end - partial
        if in_base == self.in_base and out_pos == self.out_base:
            return
        self.in_base, self.out_base = in_base, out_pos
        if not partial:
            self.anchor, self.valid = in_base, True
        self._publish()


@dataclass(frozen=True)
class LogState:
    in_base: int
    in_end: int
    out_base: int
    valid: bool
    data: bytes                  # the stream from in_base to in_end (when valid)


def read(buf) -> LogState:
    """The log a dead process left; BadLog when ``buf`` is not one."""
    if len(buf) < SIZE or bytes(buf[0:8]) != MAGIC or buf[8] not in (0, 1):
        raise BadLog("not an NBD in-flight log")
    anchor, in_base, in_end, out_base, valid = _SLOT.unpack_from(buf, _SLOT_AT[buf[8]])
    if not anchor <= in_base <= in_end:
        raise BadLog("inconsistent in-flight log")
    valid = bool(valid) and in_end - anchor <= CAPACITY
    data = bytes(buf[DATA + in_base - anchor:DATA + in_end - anchor]) if valid else b""
    return LogState(in_base, in_end, out_base, valid, data)


def is_log(head: bytes) -> bool:
    return head.startswith(MAGIC)


@dataclass(frozen=True)
class Replay:
    """How the next process goes on: ``actions`` (the transmission's answers, the first one cut
    where the dead process stopped writing it) are sent first, then the parser resumes with
    ``buffered`` (a request begun in part) and ``skip`` (WRITE payload still to discard)."""
    actions: tuple
    buffered: bytes
    skip: int
    in_base: int                 # the settle point the replayed requests start from
    out_base: int
    logged: bytes                # the client's stream from in_base: the next process logs it again


def reply_size(action: tuple) -> int:
    kind = action[0]
    if kind == READ:
        return len(action[1]) + action[3]
    if kind == REPLY:
        return len(action[1])
    if kind == CACHE:
        return len(action[3])
    return 0                      # DISC: no reply


def _cut(action: tuple, sent: int) -> tuple:
    """``action`` without its first ``sent`` bytes (0 < sent < reply_size)."""
    kind = action[0]
    if kind == READ:
        header, offset, length = action[1], action[2], action[3]
        if sent < len(header):
            return (READ, header[sent:], offset, length)
        done = sent - len(header)
        return (READ, b"", offset + done, length - done)
    if kind == REPLY:
        return (REPLY, action[1][sent:])
    return (REPLY, action[3][sent:])      # CACHE: the hint was given before it was cut


def plan(log: LogState, consumed: int, written: int, tx: Transmission) -> Replay | str:
    """The replay for a connection whose process died, or why it cannot be resumed.
    ``consumed``/``written``: how far the kernel says the two streams went."""
    if not log.valid:
        return "more requests were waiting than the in-flight log holds"
    if consumed > log.in_end:
        return f"the stopped process read {consumed - log.in_end} bytes it had not logged"
    if consumed < log.in_base:
        return "the in-flight log is ahead of the socket"
    if written < log.out_base:
        return "a reply before the in-flight log was cut short"
    taken = log.data[:consumed - log.in_base]     # the rest was logged and left in the socket
    parser = RequestParser()
    try:
        requests = parser.feed(taken)
    except c.ProtocolError as e:
        return f"the logged requests do not parse: {e}"
    sent = written - log.out_base
    actions = []
    for r in requests:
        action = tx.handle(*r)
        if action[0] == DISC:
            if not sent:
                actions.append(action)
            break
        size = reply_size(action)
        if sent >= size:
            sent -= size
            continue
        if sent:
            action, sent = _cut(action, sent), 0
        actions.append(action)
    if sent:
        return f"{sent} bytes more were written than the logged requests' replies"
    buffered, skip = parser.pending()
    return Replay(tuple(actions), buffered, skip, log.in_base, log.out_base, taken)
