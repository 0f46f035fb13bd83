"""Twisted adapter, one NBD connection: its life (handshake timer, close, log lines) and the
queue of answers (listener.py admits connections and keeps the open ones; sender.py writes
the replies with sendfile).

The pure modules decide (handshake, transmission, admission, exports); this one feeds them
bytes and carries out their answers in order. While the sender waits for a full socket
(we are the transport's pull producer: resumeProducing) nothing else is answered. Reading
stops when too many answers wait, so a slow client costs a bounded queue of small tuples,
never image data in memory.

A connection can also start in transmission: adopted from the systemd fd store after a restart
(``Resumed``: the export's file, what was negotiated, a request read in part), and it can be
``detach``ed at a restart: taken out of the reactor, not closed, its socket left to the store.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from twisted.internet import error as terror
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from . import codec as c
from .exports import OpenExport
from .handshake import Close, Handshake, Send, Transmit
from .handover import Handover, SessionState
from .sender import ReplySender
from .transmission import CACHE, DISC, READ, REPLY, RequestParser, SessionRecord, Transmission

log = Logger(namespace="bootserverd.nbd")
QUEUE_HIGH, QUEUE_LOW = 256, 32   # stop reading above this many unanswered requests, resume below


@dataclass(frozen=True)
class Resumed:
    """A connection another process of ours served: go on in transmission."""
    export: OpenExport
    state: SessionState
    handover: Handover | None      # None: that process crashed
    fd_group: str                  # its name in the fd store


class NBDServerProtocol(Protocol):
    def __init__(self, factory, host: str, port: int, resumed: Resumed | None = None) -> None:
        """``factory``: the listener (nbd.listener.NBDFactory): catalog, clock, timeouts."""
        self.factory, self.host, self.client = factory, host, f"{host}:{port}"
        self.resumed = resumed
        self.fd_group: str | None = resumed.fd_group if resumed else None   # stored under this name
        self.detached = False
        self.quiesced = False        # a restart is coming: reading stays paused
        self.handshake = Handshake(factory.catalog)
        self.export: OpenExport | None = None
        self.tx: Transmission | None = None
        self.parser = RequestParser()
        self.queue: deque = deque()
        self.sender: ReplySender | None = None
        self.reading_paused = self.closing = self.soft = False   # soft: closed by _finish
        self.reason: str | None = None
        self.requests = 0
        self.started = 0.0
        self._timer = None

    @property
    def bytes_sent(self) -> int:
        return self.sender.bytes_sent if self.sender is not None else 0

    def connectionMade(self) -> None:
        self.started = self.factory.clock.seconds()
        self.sender = ReplySender(self.transport, self._abort)
        self.transport.setTcpNoDelay(True)   # we coalesce ourselves (MSG_MORE)
        self.transport.registerProducer(self, False)
        if self.resumed is not None:
            return self._resume(self.resumed)
        self._timer = self.factory.clock.callLater(self.factory.handshake_timeout, self._timed_out)
        self._run(self.handshake.start())

    def _resume(self, r: Resumed) -> None:
        self.handshake.negotiated.options[:] = r.state.options
        self.export = r.export
        self.sender.fd = r.export.fd
        self.tx = Transmission(r.export.size, r.state.structured, r.state.contexts)
        if r.handover is not None:
            self.parser.resume(r.handover.buffered, r.handover.skip)
        log.info("NBD {client} resumed on export {export!r} after a restart (first served as {first})",
                 client=self.client, export=r.export.name, first=r.state.client)

    def session_state(self) -> SessionState:
        """What a restarted daemon needs to serve this connection on (in transmission only)."""
        n = self.handshake.negotiated
        return SessionState(self.export.name, self.export.size, self.tx.structured, dict(self.tx.contexts),
                            tuple(n.options), self.resumed.state.client if self.resumed else self.client,
                            self.export.description)

    @property
    def drained(self) -> bool:
        """Every request read so far is answered and on its way (in the socket's buffer)."""
        return not self.queue and not self.sender.blocked

    def quiesce(self) -> None:
        """A restart is coming: read no more requests; answer those already read."""
        self.quiesced = self.reading_paused = True
        self.transport.pauseProducing()

    def detach(self) -> Handover:
        """Leave the reactor without closing the socket (the fd store keeps it for the next
        process): no close, no shutdown, no log line of an ended session."""
        self.detached = self.closing = True
        self._stop_timer()
        self.transport.unregisterProducer()
        self.transport.stopReading()
        self.transport.stopWriting()
        buffered, skip = self.parser.pending()
        return Handover(buffered, skip)

    def connectionLost(self, reason) -> None:
        if self.detached:
            return          # handed to the next process; the reactor let go of it at shutdown
        self._stop_timer()
        unanswered = len(self.queue) + self.sender.drop()
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
                self.sender.send(act.data)
            elif isinstance(act, Close):
                log.debug("NBD {client}: negotiation ended: {reason}", client=self.client,
                          reason=act.reason)
                return self._finish(act.reason)
            elif isinstance(act, Transmit):
                self._enter(act)

    def _enter(self, t: Transmit) -> None:
        self._stop_timer()
        self.export = t.export
        self.sender.fd = t.export.fd
        self.tx = Transmission(t.export.size, t.structured, t.contexts)
        self.factory.attached(self)
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
        if self.closing:
            self.sender.blocked = False
            return
        self.sender.resume()
        if self.tx is not None:
            self._pump()

    def stopProducing(self) -> None:   # a pull producer: the transport never pauses us
        self.queue.clear()

    def _pump(self) -> None:
        q, sender = self.queue, self.sender
        while q and not sender.blocked and not self.closing:
            act = q.popleft()
            kind = act[0]
            if kind == READ:
                sender.send(act[1], (act[2], act[3]))
            elif kind == REPLY:
                sender.send(act[1])
            elif kind == CACHE:
                try:
                    os.posix_fadvise(self.export.fd, act[1], act[2], os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass   # only a hint
                sender.send(act[3])
            elif kind == DISC:
                return self._finish("client sent NBD_CMD_DISC")
        if self.reading_paused and len(q) <= QUEUE_LOW and not self.closing and not self.quiesced:
            self.reading_paused = False
            self.transport.resumeProducing()
