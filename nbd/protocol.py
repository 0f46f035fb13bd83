"""Twisted adapter, one NBD connection: its life (handshake timer, close, log lines)
(listener.py admits connections and keeps the open ones; sender.py queues and writes the
answers with sendfile, sendpool.py from a few threads).

The pure modules decide (handshake, transmission, admission, exports); this one feeds them
bytes and hands their answers to the sender. While the sender waits for a full socket (we
are the transport's pull producer: resumeProducing) nothing else is answered.

A connection can also start in transmission, adopted from the systemd fd store after a restart,
and be detached at one: nbd.keeper.
"""

from __future__ import annotations

import os

from twisted.internet import error as terror
from twisted.internet.protocol import Protocol
from twisted.logger import Logger

from . import codec as c
from . import keeper
from .exports import OpenExport
from .handshake import Close, Handshake, Send, Transmit
from .handover import Resumed
from .sender import Answers, ReplySender
from .transmission import RequestParser, SessionRecord, Transmission

log = Logger(namespace="bootserverd.nbd")


class NBDServerProtocol(Protocol):
    def __init__(self, factory, host: str, port: int, resumed: Resumed | None = None) -> None:
        """``factory``: the listener (nbd.listener.NBDFactory): catalog, clock, timeouts."""
        self.factory, self.host, self.client = factory, host, f"{host}:{port}"
        self.resumed = resumed
        self.fd_group: str | None = resumed.fd_group if resumed else None   # stored under this name
        self.detached = False
        self.handshake = Handshake(factory.catalog)
        self.export: OpenExport | None = None
        self.tx: Transmission | None = None
        self.parser = RequestParser()
        self.sender: ReplySender | None = None
        self.answers: Answers | None = None
        self.closing = self.soft = False   # soft: closed by _finish
        self.reason: str | None = None
        self.requests = 0
        self.in_pos = 0                     # bytes of the client's stream read so far
        self.inflight: keeper.InflightKeeper | None = None   # kept connections: what a crash would leave
        self.started = 0.0
        self.trace = None          # an nbd.trace.Recorder when this session is recorded (nbd.tracefile)
        self._timer = None

    @property
    def bytes_sent(self) -> int:
        return self.sender.bytes_sent if self.sender is not None else 0

    def connectionMade(self) -> None:
        self.started = self.factory.clock.seconds()
        self.sender = ReplySender(self.transport, self._abort, self.factory.send_pool, self.resumeProducing)
        self.answers = Answers(self.transport, self.sender, lambda: self._finish("client sent NBD_CMD_DISC"))
        self.transport.setTcpNoDelay(True)   # we coalesce ourselves (MSG_MORE)
        self.transport.registerProducer(self, False)
        if self.resumed is not None:
            return keeper.resume(self, self.resumed)
        self._timer = self.factory.clock.callLater(self.factory.handshake_timeout, self._timed_out)
        self._run(self.handshake.start())

    def connectionLost(self, reason) -> None:
        if self.detached:
            return          # handed to the next process; the reactor let go of it at shutdown
        self.stop_timer()
        self.closing = True
        why, by_client = SessionRecord.why_closed(self.reason, self.soft, bool(reason.check(terror.ConnectionDone)),
                                                  reason.getErrorMessage(), self.answers.stop())
        if self.export is not None:
            os.close(self.export.fd)
        record = SessionRecord(self.client, self.export and self.export.name, self.bytes_sent,
                               self.requests, self.factory.clock.seconds() - self.started, why,
                               SessionRecord.outcome_of(self.export is not None, by_client),
                               tuple(self.handshake.negotiated.options))
        log.info("NBD {client} {summary}", summary=record.summary(), **vars(record))
        self.factory.connection_ended(self, record)

    def stop_timer(self) -> None:
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
        self.answers.stop()
        self.transport.abortConnection()

    # --- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        self.in_pos += len(data)
        if self.tx is None:
            return self._run(self.handshake.feed(data))
        try:
            reqs = self.parser.feed(data)
        except c.ProtocolError as e:
            log.warn("NBD {client}: {error}; disconnecting", client=self.client, error=e)
            return self._abort(f"protocol error: {e}")
        self.requests += len(reqs)
        if self.trace is not None:
            self.trace.add(self.factory.clock.seconds() - self.started, reqs)
        self.answers.add(self.tx.handle(*r) for r in reqs)
        if self.inflight is not None:
            self.inflight.settle()

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
        self.stop_timer()
        self.in_pos -= len(t.leftover)     # read again as transmission just below
        self.export = t.export
        self.sender.attach(t.export)
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
            self.answers.pump()
            if self.inflight is not None:
                self.inflight.settle()

    def stopProducing(self) -> None:
        """The connection is lost (a pull producer is never paused): answer nothing more; what
        is left is counted by connectionLost (answers.stop) for the session's line."""
        self.answers.stopped = True
