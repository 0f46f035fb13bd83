"""Answers onto one NBD connection's socket, in order, without copying image data through
Python (I/O).

``Answers`` keeps the queue of what the transmission decided (nbd.transmission actions) and
pauses reading when too many wait, so a slow client costs a bounded queue of small tuples; it
sends at most ``TURN_BYTES`` of one connection's answers per reactor turn, so a client with a
deep queue of large reads (multi-conn, a copy of the export) does not hold the reactor while
the booting clients, one small read in flight each, wait.
``ReplySender`` writes one reply at a time.

A reply is a header, then (READ) a range of the export's file: the header goes with MSG_MORE
and the range by os.sendfile from the export's descriptor. When the socket is full the rest of
a reply stays an (offset, length) range of the file, never bytes in memory, and the connection
waits for writability (the transport calls its pull producer's resumeProducing); a header cut
short goes to the transport's own buffer, which the transport drains first.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from typing import Callable

from .transmission import CACHE, DISC, READ, REPLY

QUEUE_HIGH, QUEUE_LOW = 256, 32   # stop reading above this many unanswered requests, resume below
TURN_BYTES = 256 << 10             # one connection's answers per reactor turn, then the others' turn


class ReplySender:
    def __init__(self, transport, abort: Callable[[str], None]) -> None:
        """``abort(reason)``: the connection cannot go on (the peer left, the file is short)."""
        self.transport = transport
        self.sock = transport.getHandle()
        self.abort = abort
        self.fd: int | None = None          # the export's descriptor, once one is chosen
        self.blocked = False                # the socket is full: wait for resume()
        self.pending: tuple[int, int] | None = None   # (offset, length) of a reply's data still to send
        self.bytes_sent = 0                 # payload bytes of READ replies
        self.stream_pos = 0                 # bytes of our stream to the client handed to send() so far

    def send(self, data: bytes, file_range: tuple[int, int] | None = None) -> None:
        """``data``, then (a READ reply) the export's bytes in ``file_range``."""
        self.stream_pos += len(data) + (file_range[1] if file_range else 0)
        n = 0
        if not self.blocked:
            try:
                n = self.sock.send(data, socket.MSG_MORE if file_range else 0)
            except BlockingIOError:
                pass
            except OSError as e:
                return self.abort(f"connection lost mid-reply: {e.strerror}")
        if n < len(data):
            self.blocked = True
            self.transport.write(data[n:] if n else data)
            if file_range:
                self._wait_writable(*file_range)
        elif file_range:
            self._sendfile(*file_range)

    def resume(self) -> None:
        """The transport's buffer is empty and the socket writable: finish the pending reply."""
        self.blocked = False
        if self.pending is not None:
            (offset, length), self.pending = self.pending, None
            self._sendfile(offset, length)

    def yield_turn(self) -> None:
        """Stop here until the reactor's next turn (resumeProducing when the socket is writable,
        after the other connections' events of this turn)."""
        self.blocked = True
        self.transport.startWriting()

    def drop(self) -> int:
        """The connection is closing: forget the pending reply; 1 if there was one."""
        pending, self.pending = self.pending, None
        return pending is not None

    def _sendfile(self, offset: int, length: int) -> None:
        sockfd, start, end = self.sock.fileno(), offset, offset + length
        problem = None
        try:
            while offset < end:
                k = os.sendfile(sockfd, self.fd, offset, end - offset)
                if k == 0:   # the header promised data we cannot produce: hard disconnect (spec)
                    problem = "image file shorter than its size at open (truncated in place?)"
                    break
                offset += k
        except BlockingIOError:
            pass
        except OSError as e:
            gone = e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
            problem = (f"connection lost mid-reply: {e.strerror}" if gone
                       else f"sendfile failed: {e.strerror}")
        self.bytes_sent += offset - start
        if problem:
            self.abort(problem)
        elif offset < end:
            self._wait_writable(offset, end - offset)

    def _wait_writable(self, offset: int, length: int) -> None:
        """startWriting() with an empty buffer makes the transport call resumeProducing() as
        soon as the socket is writable again (and after any header bytes it holds)."""
        self.pending = (offset, length)
        self.blocked = True
        self.transport.startWriting()


class Answers:
    """The answers not yet written, sent in order whenever the socket takes them."""

    def __init__(self, transport, sender: ReplySender, on_disc: Callable[[], None]) -> None:
        self.transport, self.sender, self.on_disc = transport, sender, on_disc
        self.queue: deque = deque()
        self.reading_paused = False
        self.quiesced = False        # a restart is coming: reading stays paused
        self.stopped = False

    def add(self, actions) -> None:
        self.queue.extend(actions)
        self.pump()
        if not self.reading_paused and len(self.queue) > QUEUE_HIGH and not self.stopped:
            self.reading_paused = True
            self.transport.pauseProducing()

    def pump(self) -> None:
        q, sender = self.queue, self.sender
        turn = 0
        while q and not sender.blocked and not self.stopped:
            if turn >= TURN_BYTES:          # a deep queue of large reads: let the others go first
                sender.yield_turn()
                break
            act = q.popleft()
            kind = act[0]
            if kind == READ:
                turn += act[3]
                sender.send(act[1], (act[2], act[3]))
            elif kind == REPLY:
                sender.send(act[1])
            elif kind == CACHE:
                try:
                    os.posix_fadvise(sender.fd, act[1], act[2], os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass   # only a hint
                sender.send(act[3])
            elif kind == DISC:
                return self.on_disc()
        if self.reading_paused and len(q) <= QUEUE_LOW and not self.stopped and not self.quiesced:
            self.reading_paused = False
            self.transport.resumeProducing()

    def quiesce(self) -> None:
        """Read no more requests; answer those already read."""
        self.quiesced = self.reading_paused = True
        self.transport.pauseProducing()

    @property
    def drained(self) -> bool:
        """Every request read so far is answered and on its way (in the socket's buffer)."""
        return not self.queue and not self.sender.blocked

    def stop(self) -> int:
        """Answer nothing more; how many answers are left unsent (a reply cut short counts)."""
        self.stopped = True
        left = len(self.queue) + self.sender.drop()
        self.queue.clear()
        return left
