"""Twisted adapter, one NBD connection: its socket, its export's descriptor, its timer, logs
(listener.py admits connections and keeps the open ones).

The pure modules decide (handshake, transmission, admission, exports); this one moves the
bytes. Replies go straight to the non-blocking socket (header with MSG_MORE, then os.sendfile
from the export's descriptor: no copy through Python). When the socket is full, the rest of a
reply stays an (offset, length) range of the file and we wait for writability (we are the
transport's pull producer: resumeProducing), answering nothing else meanwhile; a header cut
short goes to the transport's buffer. Reading stops when too many answers wait, so a slow
client costs a bounded queue of small tuples, never image data in memory.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque

from twisted.internet import error as terror
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from . import codec as c
from .exports import OpenExport
from .handshake import Close, Handshake, Send, Transmit
from .transmission import CACHE, DISC, READ, REPLY, RequestParser, SessionRecord, Transmission

log = Logger(namespace="bootserverd.nbd")
QUEUE_HIGH, QUEUE_LOW = 256, 32   # stop reading above this many unanswered requests, resume below


class NBDServerProtocol(Protocol):
    def __init__(self, factory, host: str, port: int) -> None:
        """``factory``: the listener (nbd.listener.NBDFactory): catalog, clock, timeouts."""
        self.factory, self.host, self.client = factory, host, f"{host}:{port}"
        self.handshake = Handshake(factory.catalog)
        self.export: OpenExport | None = None
        self.tx: Transmission | None = None
        self.parser = RequestParser()
        self.queue: deque = deque()
        self.blocked = False         # the socket is full: wait for resumeProducing
        self.pending = None          # (offset, length) of a reply's data still to send
        self.reading_paused = self.closing = self.soft = False   # soft: closed by _finish
        self.reason: str | None = None
        self.bytes_sent = self.requests = 0
        self.started = 0.0
        self._timer = self._sock = None

    def connectionMade(self) -> None:
        self.started = self.factory.clock.seconds()
        self._sock = self.transport.getHandle()
        self.transport.setTcpNoDelay(True)   # we coalesce ourselves (MSG_MORE)
        self.transport.registerProducer(self, False)
        self._timer = self.factory.clock.callLater(self.factory.handshake_timeout, self._timed_out)
        self._run(self.handshake.start())

    def connectionLost(self, reason) -> None:
        self._stop_timer()
        unanswered = len(self.queue) + (self.pending is not None)
        self.queue.clear()
        self.closing = True
        why, by_client = self.reason, self.soft      # soft: we closed after the client's DISC
        if why is None:
            by_client = bool(reason.check(terror.ConnectionDone))
            why = ("client closed the connection" if by_client
                   else f"connection lost: {reason.getErrorMessage()}")
            why += f" mid-reply ({unanswered} replies unsent)" if unanswered else ""
        if self.export is not None:
            os.close(self.export.fd)
        record = SessionRecord(self.client, self.export and self.export.name, self.bytes_sent,
                               self.requests, self.factory.clock.seconds() - self.started, why,
                               SessionRecord.outcome_of(self.export is not None, by_client),
                               tuple(self.handshake.negotiated.options))
        log.info("NBD {client} {summary}", summary=record.summary(), **vars(record))
        self.factory.connection_ended(self, record)

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._abort(f"no export chosen within {self.factory.handshake_timeout:g} s")

    def _finish(self, reason: str) -> None:
        """Soft close: what is buffered is still sent."""
        if not self.closing:
            self.closing, self.soft, self.reason = True, True, reason
            self.transport.unregisterProducer()   # a pull producer would keep the socket open
            self.transport.loseConnection()

    def _abort(self, reason: str) -> None:
        self.reason = self.reason or reason
        self.closing, self.soft = True, False
        self.queue.clear()
        self.transport.abortConnection()

    # --- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if self.tx is None:
            return self._run(self.handshake.feed(data))
        try:
            reqs = self.parser.feed(data)
        except c.ProtocolError as e:
            log.warn("NBD {client}: {error}; disconnecting", client=self.client, error=e)
            return self._abort(f"protocol error: {e}")
        self.queue.extend(self.tx.handle(*r) for r in reqs)
        self.requests += len(reqs)
        self._pump()
        if not self.reading_paused and len(self.queue) > QUEUE_HIGH and not self.closing:
            self.reading_paused = True
            self.transport.pauseProducing()

    def _run(self, actions: list) -> None:
        for act in actions:
            if isinstance(act, Send):
                self._send(act.data)
            elif isinstance(act, Close):
                log.debug("NBD {client}: negotiation ended: {reason}", client=self.client,
                          reason=act.reason)
                return self._finish(act.reason)
            elif isinstance(act, Transmit):
                self._enter(act)

    def _enter(self, t: Transmit) -> None:
        self._stop_timer()
        self.export = t.export
        self.tx = Transmission(t.export.size, t.structured, t.contexts)
        features = ["structured replies" if t.structured else "simple replies",
                    *sorted(t.contexts.values())]
        log.info("NBD {client} connected to export {export!r}: {size} bytes, {features}, "
                 "options {options}", client=self.client, export=t.export.name, size=t.export.size,
                 features=", ".join(features), options=",".join(self.handshake.negotiated.options))
        if t.leftover:
            self.dataReceived(t.leftover)

    # --- output -----------------------------------------------------------------------------

    def resumeProducing(self) -> None:
        """The transport's buffer is empty and the socket writable: it is ours again."""
        self.blocked = False
        if self.pending is not None and not self.closing:
            (offset, length), self.pending = self.pending, None
            self._sendfile(offset, length)
        if self.tx is not None:
            self._pump()

    def stopProducing(self) -> None:   # a pull producer: the transport never pauses us
        self.queue.clear()

    def _pump(self) -> None:
        q = self.queue
        while q and not self.blocked and not self.closing:
            act = q.popleft()
            kind = act[0]
            if kind == READ:
                self._send(act[1], (act[2], act[3]))
            elif kind == REPLY:
                self._send(act[1])
            elif kind == CACHE:
                try:
                    os.posix_fadvise(self.export.fd, act[1], act[2], os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass   # only a hint
                self._send(act[3])
            elif kind == DISC:
                return self._finish("client sent NBD_CMD_DISC")
        if self.reading_paused and len(q) <= QUEUE_LOW and not self.closing:
            self.reading_paused = False
            self.transport.resumeProducing()

    def _send(self, data: bytes, file_range: tuple[int, int] | None = None) -> None:
        """``data``, then (a READ reply) the export's bytes in ``file_range`` by sendfile."""
        n = 0
        if not self.blocked:
            try:
                n = self._sock.send(data, socket.MSG_MORE if file_range else 0)
            except BlockingIOError:
                pass
            except OSError as e:
                return self._abort(f"connection lost mid-reply: {e.strerror}")
        if n < len(data):
            self.blocked = True
            self.transport.write(data[n:] if n else data)
            if file_range:
                self._wait_writable(*file_range)
        elif file_range:
            self._sendfile(*file_range)

    def _sendfile(self, offset: int, length: int) -> None:
        fd, sockfd, start, end = self.export.fd, self._sock.fileno(), offset, offset + length
        problem = None
        try:
            while offset < end:
                k = os.sendfile(sockfd, fd, offset, end - offset)
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
            self._abort(problem)
        elif offset < end:
            self._wait_writable(offset, end - offset)

    def _wait_writable(self, offset: int, length: int) -> None:
        """Socket full mid-reply: keep the rest as a file range, not as bytes in memory.
        startWriting() with an empty buffer makes the transport call resumeProducing()
        as soon as the socket is writable again (and after any header bytes it holds)."""
        self.pending = (offset, length)
        self.blocked = True
        self.transport.startWriting()
