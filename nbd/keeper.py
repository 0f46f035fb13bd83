"""Keeping a connection's in-flight log current (I/O: the transport's reads, the log's memfd;
the log itself and the replay after a crash are nbd.inflight, pure).

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

from .inflight import InflightLog


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
