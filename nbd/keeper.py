"""A connection kept across a restart (I/O; what is kept and the replay after a crash are
nbd.handover and nbd.inflight, pure): ``resume`` one adopted from the systemd fd store
(``Resumed``: the export's file, what was negotiated, a request read in part, answers owed),
``session_state`` and ``detach`` one for the next process (taken out of the reactor, not
closed, its socket left to the store), and ``InflightKeeper``, its in-flight log kept current.

The log holds the request bytes read and not yet fully answered. It is started from what the
connection already owes (a replay after a crash, a request read in part before a restart), fed
every byte before the protocol sees it, and reset (settled) whenever every answer is in the
socket. Twisted has no hook between recv() and dataReceived, and a crash there would lose bytes
read and not yet logged: so a kept connection's reads go through ``read`` instead of the
transport's own doRead — the bytes are logged while still in the socket (MSG_PEEK), then taken,
then acted upon, and at any moment each byte is in the socket, in the log, or answered.
"""

from __future__ import annotations

import socket

from twisted.internet import main
from twisted.logger import Logger

from .handover import Handover, Resumed, SessionState
from .inflight import InflightLog
from .transmission import Transmission

log = Logger(namespace="bootserverd.nbd")


def resume(p, r: Resumed) -> None:
    """Serve on ``p`` (an nbd.protocol.NBDServerProtocol just made) what the stopped process left."""
    p.handshake.negotiated.options[:] = r.state.options
    p.export = r.export
    p.sender.attach(r.export)
    p.tx = Transmission(r.export.size, r.state.structured, r.state.contexts)
    p.in_pos, p.sender.stream_pos = r.consumed, r.written
    if r.handover is not None:
        p.parser.resume(r.handover.buffered, r.handover.skip)
    owed = ""
    if r.replay is not None:
        p.parser.resume(r.replay.buffered, r.replay.skip)
        owed = f", {len(r.replay.actions)} answers owed by the stopped process" if r.replay.actions else ""
    log.info("NBD {client} resumed on export {export!r} after a restart (first served as {first}){owed}",
             client=p.client, export=r.export.name, first=r.state.client, owed=owed)
    if r.replay is not None and r.replay.actions:
        p.answers.add(r.replay.actions)


def session_state(p) -> SessionState:
    """What a restarted daemon needs to serve ``p`` on (in transmission only)."""
    first = p.resumed.state.client if p.resumed else p.client
    return SessionState.of(p.export, p.tx, p.handshake.negotiated.options, first)


def detach(p) -> Handover:
    """Take ``p`` out of the reactor without closing its socket (the fd store keeps it for the
    next process): no close, no shutdown, no log line of an ended session."""
    p.detached = p.closing = True
    p.stop_timer()
    p.transport.unregisterProducer()
    p.transport.stopReading()
    p.transport.stopWriting()
    buffered, skip = p.parser.pending()
    return Handover(buffered, skip)


def keep_inflight(p, buf) -> None:
    """From now on, log ``p``'s requests read and not yet answered into ``buf`` (the mmap of a
    memfd the fd store keeps beside its socket)."""
    p.inflight = InflightKeeper(p, buf)


class InflightKeeper:
    def __init__(self, protocol, buf) -> None:
        """``protocol``: the connection (nbd.protocol.NBDServerProtocol), in transmission;
        ``buf``: the mmap of the memfd the fd store keeps beside its socket."""
        self.protocol = protocol
        replay = protocol.resumed.replay if protocol.resumed is not None else None
        if replay is not None:
            self.log = InflightLog(buf, replay.in_base, replay.out_base, replay.logged)
        else:
            buffered, skip = protocol.parser.pending()
            self.log = InflightLog(buf, protocol.in_pos - len(buffered), protocol.sender.stream_pos, buffered,
                                   valid=not skip)
        self.settle()
        protocol.transport.doRead = self.read

    def settle(self) -> None:
        """Every answer is in the socket: what was read before a request begun in part (if any)
        needs no replay after a crash."""
        p = self.protocol
        if p.answers.drained:
            partial = p.parser.partial()
            if partial is not None:
                self.log.settle(partial, p.sender.stream_pos)

    def read(self):
        """The transport's doRead: log, take, then hand the bytes to the protocol."""
        transport = self.protocol.transport
        sock = transport.socket
        try:
            data = sock.recv(transport.bufferSize, socket.MSG_PEEK)
            if not data:
                return main.CONNECTION_DONE
            self.log.received(data)
            taken = 0
            while taken < len(data):
                taken += len(sock.recv(len(data) - taken))   # queued already: never blocks
        except BlockingIOError:
            return None
        except OSError:
            return main.CONNECTION_LOST
        self.protocol.dataReceived(data)
        return None
