"""Answers onto one NBD connection's socket, in order, without copying image data through
Python when it is large or on the disk (I/O).

``Answers`` keeps the queue of what the transmission decided (nbd.transmission actions) and
pauses reading when too many wait, so a slow client costs a bounded queue of small tuples; it
sends at most ``TURN_BYTES`` of one connection's answers per reactor turn, so a client with a
deep queue of large reads (multi-conn, a copy of the export) does not hold the reactor while
the booting clients, one small read in flight each, wait.
``ReplySender`` writes one reply at a time.

A reply is a header, sent with MSG_MORE, then (READ) a range of the export's file by
os.sendfile from the export's descriptor: from the reactor when the range is small and in the
page cache, else from a thread of nbd.sendpool when there is one (so the disk and large copies
do not hold the reactor). When
the socket is full the rest of a reply stays an (offset, length) range of the file, never bytes
in memory, and the connection waits for writability (the transport calls its pull producer's
resumeProducing); a header cut short goes to the transport's own buffer, which the transport
drains first.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Callable

from .pagecache import FileMap
from .sendpool import SendPool, send_range
from .transmission import CACHE, DISC, READ, REPLY

QUEUE_HIGH, QUEUE_LOW = 256, 32   # stop reading above this many unanswered requests, resume below
TURN_BYTES = 256 << 10             # one connection's answers per reactor turn, then the others' turn


class ReplySender:
    def __init__(self, transport, abort: Callable[[str], None], pool: SendPool | None = None,
                 on_ready: Callable[[], None] | None = None) -> None:
        """``abort(reason)``: the connection cannot go on (the peer left, the file is short);
        ``pool``: sends what the reactor should not wait for (nbd.sendpool); ``on_ready()``: a
        range sent from the pool is done and the socket takes more."""
        self.transport = transport
        self.sock = transport.getHandle()
        self.abort = abort
        self.pool, self.on_ready = pool, on_ready
        self.export = None                  # the OpenExport chosen (nbd.exports)
        self.fd: int | None = None          # its descriptor
        self.fmap: FileMap | None = None    # its mapping, for the pool's page cache checks
        self.pool_fds: tuple[int, int] | None = None   # the threads' duplicates of socket and file
        self.blocked = False                # the socket is full, or the pool is sending: wait
        self.in_pool = False                # a range of ours is in the pool
        self.closed = False
        self.pending: tuple[int, int] | None = None   # (offset, length) of a reply's data still to send
        self.bytes_sent = 0                 # payload bytes of READ replies
        self.stream_pos = 0                 # bytes of our stream to the client handed to send() so far

    def attach(self, export) -> None:
        self.export, self.fd = export, export.fd
        if self.pool is not None:
            self.fmap = FileMap(export.fd, export.size)

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
            self._send_range(*file_range)

    def resume(self) -> None:
        """The transport's buffer is empty and the socket writable: finish the pending reply."""
        if self.in_pool:
            return
        self.blocked = False
        if self.pending is not None:
            (offset, length), self.pending = self.pending, None
            self._send_range(offset, length)

    def yield_turn(self) -> None:
        """Stop here until the reactor's next turn (resumeProducing when the socket is writable,
        after the other connections' events of this turn)."""
        self.blocked = True
        self.transport.startWriting()

    def drop(self) -> int:
        """The connection is closing: forget the pending reply; 1 if there was one."""
        cut = self.pending is not None or self.in_pool
        self.pending, self.closed = None, True
        if self.fmap is not None:
            self.fmap.close()
        if not self.in_pool:
            self._close_pool_fds()
        return cut

    def _close_pool_fds(self) -> None:
        fds, self.pool_fds = self.pool_fds, None
        for fd in fds or ():
            os.close(fd)

    def _send_range(self, offset: int, length: int) -> None:
        pool = self.pool
        if pool is not None and not pool.in_memory(self.export.file, self.fmap, offset, length):
            if self.pool_fds is None:   # the connection may end, and its own fds be reused, mid-send
                self.pool_fds = os.dup(self.sock.fileno()), os.dup(self.fd)
            self.blocked = self.in_pool = True
            return pool.submit(*self.pool_fds, offset, length,
                               lambda sent, problem: self._sent_from_pool(offset, length, sent, problem))
        sent, problem = send_range(self.sock.fileno(), self.fd, offset, length)
        if sent == length:
            self.bytes_sent += sent
        else:
            self._range_sent(offset, length, sent, problem)

    def _sent_from_pool(self, offset: int, length: int, sent: int, problem: str | None) -> None:
        self.in_pool = False
        if self.closed:
            return self._close_pool_fds()
        if self._range_sent(offset, length, sent, problem) and self.on_ready is not None:
            self.blocked = False
            self.on_ready()

    def _range_sent(self, offset: int, length: int, sent: int, problem: str | None) -> bool:
        """True when the whole range went out."""
        self.bytes_sent += sent
        if problem:
            self.abort(problem)
        elif sent < length:
            self._wait_writable(offset + sent, length - sent)
        return not problem and sent == length

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
