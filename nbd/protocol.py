"""Twisted adapter for the NBD server: sockets, file descriptors, timers, logs.

The pure machines (handshake.Handshake, transmission.Transmission) decide; this module
moves the bytes. Replies go straight to the non-blocking socket (header with MSG_MORE,
then os.sendfile from the export's descriptor: no copy through Python). When the socket
is full, the rest of a reply stays a (offset, length) range of the file and we wait for
writability (we are the transport's pull producer: resumeProducing), answering nothing
else meanwhile; small leftovers (a header cut short) go to the transport's buffer.
Reading stops when too many answers are waiting, so a slow client costs a bounded queue
of small tuples, never image data in memory.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Protocol as TypingProtocol

from twisted.internet import error as terror
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from . import codec as c
from .handshake import Close, Handshake, Send, Transmit
from .transmission import CACHE, DISC, READ, REPLY, RequestParser, Transmission

log = Logger(namespace="bootserverd.nbd")

QUEUE_HIGH = 256   # stop reading requests above this many unanswered ones
QUEUE_LOW = 32     # and start again below this
REFUSAL_LOG_INTERVAL = 60.0  # one line per client and limit per minute, so a flood cannot flood the journal


@dataclass(frozen=True)
class ExportInfo:
    name: str
    size: int
    description: str = ""


class OpenExport:
    """An export's file held open for one connection's lifetime: a newer version
    published or the file deleted meanwhile changes nothing for this reader."""

    def __init__(self, name: str, fd: int, description: str = "") -> None:
        self.name = name
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.description = description

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class ExportCatalog(TypingProtocol):
    def names(self) -> list[str]: ...
    def lookup(self, name: str) -> ExportInfo | None: ...
    def open(self, name: str) -> OpenExport | None: ...


@dataclass(frozen=True)
class SessionRecord:
    """Handed to on_session when a connection ends (metrics, status page)."""
    client: str
    export: str | None
    bytes_sent: int
    requests: int
    seconds: float
    reason: str


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class NBDServerProtocol(Protocol):
    def __init__(self, factory: "NBDFactory", client: str) -> None:
        self.factory = factory
        self.client = client
        self.handshake = Handshake(factory.catalog)
        self.export: OpenExport | None = None
        self.tx: Transmission | None = None
        self.parser = RequestParser()
        self.queue: deque = deque()
        self.blocked = False         # the socket is full: wait for resumeProducing
        self.pending = None          # (offset, length) of a reply's data still to send
        self.reading_paused = False
        self.closing = False
        self.reason: str | None = None
        self.bytes_sent = 0
        self.requests = 0
        self.started = 0.0
        self._timer = None
        self._sock = None
        self._sockfd = -1

    # --- connection lifecycle --------------------------------------------------------------

    def connectionMade(self) -> None:
        self.started = self.factory.clock.seconds()
        self._sock = self.transport.getHandle()
        self._sockfd = self._sock.fileno()
        self.transport.setTcpNoDelay(True)   # we coalesce ourselves (MSG_MORE)
        self.transport.registerProducer(self, False)
        self._timer = self.factory.clock.callLater(self.factory.handshake_timeout,
                                                   self._handshake_timed_out)
        self._run(self.handshake.start())

    def connectionLost(self, reason) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        unanswered = len(self.queue) + (self.pending is not None)
        self.queue.clear()
        self.closing = True
        why = self.reason
        if why is None:
            if reason.check(terror.ConnectionDone):
                why = "client closed the connection"
            else:
                why = f"connection lost: {reason.getErrorMessage()}"
            if unanswered:
                why += f" mid-reply ({unanswered} replies unsent)"
        seconds = self.factory.clock.seconds() - self.started
        name = self.export.name if self.export else None
        if self.export is not None:
            self.export.close()
            rate = self.bytes_sent / seconds / 1e6 if seconds > 0 else 0.0
            log.info("NBD {client} export {export!r} disconnected: {mb} in {requests} requests, "
                     "{seconds:.1f} s ({rate:.1f} MB/s), {reason}",
                     client=self.client, export=name, mb=_mb(self.bytes_sent),
                     requests=self.requests, seconds=seconds, rate=rate, reason=why)
        else:
            log.info("NBD {client} left during negotiation after {seconds:.1f} s "
                     "(options {options}): {reason}", client=self.client, seconds=seconds,
                     options=",".join(self.handshake.negotiated.options) or "none", reason=why)
        self.factory.connection_ended(self, SessionRecord(
            self.client, name, self.bytes_sent, self.requests, seconds, why))

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self.reason = f"no export chosen within {self.factory.handshake_timeout:g} s"
        self.transport.abortConnection()

    def _finish(self, reason: str) -> None:
        """Soft close: what is buffered is still sent."""
        if self.closing:
            return
        self.closing = True
        self.reason = reason
        self.transport.unregisterProducer()   # a pull producer would keep the socket open
        self.transport.loseConnection()

    def _abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.closing = True
        self.queue.clear()
        self.transport.abortConnection()

    # --- input ------------------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closing:
            return
        if self.tx is None:
            self._run(self.handshake.feed(data))
            return
        try:
            reqs = self.parser.feed(data)
        except c.ProtocolError as e:
            log.warn("NBD {client}: {error}; disconnecting", client=self.client, error=e)
            self._abort(f"protocol error: {e}")
            return
        self._requests(reqs)

    def _run(self, actions: list) -> None:
        for act in actions:
            if isinstance(act, Send):
                self._send(act.data)
            elif isinstance(act, Close):
                log.debug("NBD {client}: negotiation ended: {reason}",
                          client=self.client, reason=act.reason)
                self._finish(act.reason)
                return
            elif isinstance(act, Transmit):
                self._enter(act)

    def _enter(self, t: Transmit) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self.export = t.export
        self.tx = Transmission(t.export.size, t.structured, t.contexts)
        features = ["structured replies"] if t.structured else ["simple replies"]
        features += sorted(t.contexts.values())
        log.info("NBD {client} connected to export {export!r}: {size} bytes, {features}, "
                 "options {options}", client=self.client, export=t.export.name,
                 size=t.export.size, features=", ".join(features),
                 options=",".join(self.handshake.negotiated.options))
        self.factory.session_started(self)
        if t.leftover:
            self.dataReceived(t.leftover)

    def _requests(self, reqs: list) -> None:
        handle = self.tx.handle
        append = self.queue.append
        for r in reqs:
            append(handle(*r))
        self.requests += len(reqs)
        self._pump()
        if not self.reading_paused and len(self.queue) > QUEUE_HIGH and not self.closing:
            self.reading_paused = True
            self.transport.pauseProducing()

    # --- output -----------------------------------------------------------------------------

    def resumeProducing(self) -> None:
        """The transport's buffer is empty and the socket writable: it is ours again."""
        self.blocked = False
        if self.pending is not None and not self.closing:
            offset, length = self.pending
            self.pending = None
            self._sendfile(offset, length)
        if self.tx is not None:
            self._pump()

    def stopProducing(self) -> None:
        self.queue.clear()

    def pauseProducing(self) -> None:   # not called for pull producers
        pass

    def _pump(self) -> None:
        q = self.queue
        while q and not self.blocked and not self.closing:
            act = q.popleft()
            kind = act[0]
            if kind == READ:
                self._send_read(act[1], act[2], act[3])
            elif kind == REPLY:
                self._send(act[1])
            elif kind == CACHE:
                try:
                    os.posix_fadvise(self.export.fd, act[1], act[2], os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass   # only a hint
                self._send(act[3])
            elif kind == DISC:
                self._finish("client sent NBD_CMD_DISC")
                return
        if self.reading_paused and len(q) <= QUEUE_LOW and not self.closing:
            self.reading_paused = False
            self.transport.resumeProducing()

    def _buffer(self, data: bytes) -> None:
        self.blocked = True
        self.transport.write(data)

    def _send(self, data: bytes) -> None:
        if self.blocked:
            self.transport.write(data)
            return
        try:
            n = self._sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._abort(f"connection lost mid-reply: {e.strerror}")
            return
        if n < len(data):
            self._buffer(data[n:])

    def _send_read(self, header: bytes, offset: int, length: int) -> None:
        try:
            n = self._sock.send(header, socket.MSG_MORE)
        except BlockingIOError:
            n = 0
        except OSError as e:
            self._abort(f"connection lost mid-reply: {e.strerror}")
            return
        if n < len(header):
            self._buffer(header[n:])
            self._wait_writable(offset, length)
            return
        self._sendfile(offset, length)

    def _sendfile(self, offset: int, length: int) -> None:
        fd, sockfd = self.export.fd, self._sockfd
        end = offset + length
        while offset < end:
            try:
                k = os.sendfile(sockfd, fd, offset, end - offset)
            except BlockingIOError:
                break
            except OSError as e:
                gone = e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
                self._abort(f"connection lost mid-reply: {e.strerror}" if gone
                            else f"sendfile failed: {e.strerror}")
                return
            if k == 0:
                # The header promised data we cannot produce: hard disconnect (spec).
                self._abort("image file shorter than its size at open (truncated in place?)")
                return
            offset += k
            self.bytes_sent += k
        if offset < end:
            self._wait_writable(offset, end - offset)

    def _wait_writable(self, offset: int, length: int) -> None:
        """Socket full mid-reply: keep the rest as a file range, not as bytes in memory.
        startWriting() with an empty buffer makes the transport call resumeProducing()
        as soon as the socket is writable again (and after any header bytes it holds)."""
        self.pending = (offset, length)
        self.blocked = True
        self.transport.startWriting()


class NBDFactory(Factory):
    """Counts connections for the limits and remembers live sessions."""

    noisy = False

    def __init__(self, catalog: ExportCatalog, clock, handshake_timeout: float = 10.0,
                 max_connections: int = 512, max_per_client: int = 16,
                 on_session: Callable[[SessionRecord], None] | None = None) -> None:
        self.catalog = catalog
        self.clock = clock
        self.handshake_timeout = handshake_timeout
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.on_session = on_session
        self.connections: set[NBDServerProtocol] = set()
        self.per_client: Counter = Counter()
        self.refused = 0
        self._refusals: dict[tuple[str, str], tuple[float, int]] = {}  # (client, key) → (logged at, hidden)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", str(addr))
        if len(self.connections) >= self.max_connections:
            self._refuse(host, "nbd.max_connections", f"{len(self.connections)} connections")
            return None
        if self.per_client[host] >= self.max_per_client:
            self._refuse(host, "nbd.max_connections_per_client",
                         f"{self.per_client[host]} connections from it")
            return None
        p = NBDServerProtocol(self, f"{host}:{getattr(addr, 'port', 0)}")
        p.host = host
        self.connections.add(p)
        self.per_client[host] += 1
        return p

    def _refuse(self, host: str, key: str, why: str) -> None:
        self.refused += 1
        now = self.clock.seconds()
        logged_at, hidden = self._refusals.get((host, key), (None, 0))
        if logged_at is not None and now - logged_at < REFUSAL_LOG_INTERVAL:
            self._refusals[(host, key)] = (logged_at, hidden + 1)
            return
        if len(self._refusals) > 10000:
            self._refusals.clear()  # bounded under a flood from many addresses
        self._refusals[(host, key)] = (now, 0)
        more = f" ({hidden} more refused in the last {now - logged_at:.0f} s)" if hidden else ""
        log.warn("NBD refused {client}: {why} ({key}){more}", client=host, why=why, key=key, more=more)

    def session_started(self, proto: NBDServerProtocol) -> None:
        pass

    def connection_ended(self, proto: NBDServerProtocol, record: SessionRecord) -> None:
        if proto in self.connections:
            self.connections.discard(proto)
            self.per_client[proto.host] -= 1
            if self.per_client[proto.host] <= 0:
                del self.per_client[proto.host]
        if self.on_session is not None:
            try:
                self.on_session(record)
            except Exception:
                log.failure("NBD on_session callback failed")

    def close_all(self) -> None:
        for p in list(self.connections):
            p.reason = "server shutting down"
            p.transport.abortConnection()
