"""Connection limits for the HTTP listener: a per-client connection cap and a request deadline.

Twisted's idle timeout restarts with every byte received, so a client that trickles header
bytes (slowloris) keeps a connection for ever, and nothing stops one address from opening
hundreds. Here:
- ``LimitedSite.buildProtocol`` counts connections per client address; past
  ``max_per_client`` the connection gets a 429 and is closed before any parsing;
- ``LimitedChannel`` gives each request ``header_timeout`` seconds from the connection (or the
  end of the previous response on a keep-alive connection) until its headers and body are
  complete; a client that has not managed by then is cut.
Refusals and cuts are logged at most once a minute per address and kind, with a count.
A keep-alive connection that stays idle after its responses were all acknowledged ends with a
reset, not a FIN: GRUB opens every connection from the same ports (21550, 21551, …) on every
boot and then jumps into the kernel without closing, so a graceful close would leave a
socket the PC's next boot runs into (its SYN meets an old connection: "connection timeout").
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import termios

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.http import HTTPChannel
from twisted.web.server import Site
from zope.interface import implementer

from bootserverd.ops.clients import ClientCounts
from bootserverd.ops.ratelimit import LogThrottle, suffix

log = Logger(namespace="bootserverd.http")
LOG_EVERY = 60.0                 # seconds between log lines per (address, kind)
MAX_LOG_KEYS = 10000             # bounded memory for the rate-limited log
TOO_MANY = (b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Retry-After: 1\r\nConnection: close\r\nContent-Length: 52\r\n\r\n"
            b"429 too many connections from your address; retry\n\n")


class RateLimitedLog:
    """Each refusal and cut counted in the metrics; logged once per (address, kind) per minute,
    the next line saying how many were hidden (the one rule of ops.ratelimit)."""

    def __init__(self, clock, metrics=None):
        self.clock = clock
        self.metrics = metrics
        self.throttle = LogThrottle(LOG_EVERY, MAX_LOG_KEYS)

    def note(self, host: str, kind: str, text: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(service="http", kind=kind).inc()
        hidden = self.throttle.admit((host, kind), self.clock.seconds())
        if hidden is not None:
            log.warn("HTTP {client}: {text}{more}", client=host, text=text, more=suffix(hidden))


class _TooMany(Protocol):
    """Answers 429 and half-closes; reads and drops what the client sends for up to
    LINGER seconds, so the 429 is not destroyed by a reset (closing a socket with unread
    request bytes in it sends RST, and the client sees "connection reset" instead)."""
    LINGER = 1.0

    def __init__(self, clock):
        self.clock = clock
        self.timer = None

    def connectionMade(self) -> None:
        self.transport.write(TOO_MANY)
        self.transport.loseWriteConnection()
        self.timer = self.clock.callLater(self.LINGER, self.transport.loseConnection)

    def dataReceived(self, data: bytes) -> None:
        pass

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()

    def connectionLost(self, reason) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()


def _pending_output(transport) -> bool:
    """Whether Twisted still holds response bytes for this connection (a slow reader)."""
    data = getattr(transport, "dataBuffer", b"")
    return bool(getattr(transport, "_tempDataBuffer", None)) or len(data) > getattr(transport, "offset", 0)


def _unacknowledged(transport) -> int | None:
    """Bytes in the kernel's send queue not yet acknowledged by the peer (SIOCOUTQ); None if unknown."""
    try:
        queued = array.array("i", [0])
        fcntl.ioctl(transport.getHandle().fileno(), termios.TIOCOUTQ, queued)
        return queued[0]
    except (AttributeError, OSError):
        return None


def _reset(transport) -> None:
    """Close with RST (SO_LINGER 0): the socket is gone at once, no FIN_WAIT left behind. Only
    for a connection with nothing left to send: abortConnection skips the shutdown() that a
    loseConnection does (which would send a FIN whatever the linger)."""
    transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abortConnection()


# An idle keep-alive connection ends this long after its last response (Apache's default
# KeepAliveTimeout): a PC booting again through GRUB reuses the ports of its last boot (GRUB
# counts them from 21550), and must not meet that boot's connection.
KEEPALIVE = 5.0


@implementer(IHalfCloseableProtocol)
class LimitedChannel(HTTPChannel):
    header_timeout = 15.0
    client_host = "?"
    _deadline = None
    _gone = False
    _responses = 0               # finished on this connection
    _since_response = 0          # request bytes received since the last one finished
    _response_at = 0.0           # when the last one finished

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm()

    def _arm(self, seconds: float | None = None) -> None:
        self._disarm()
        self._deadline = self.site.clock.callLater(self.header_timeout if seconds is None else seconds,
                                                   self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def allContentReceived(self) -> None:
        self._disarm()                       # a whole request: from here the transfer's own limits apply
        super().allContentReceived()

    def dataReceived(self, data: bytes) -> None:
        self._since_response += len(data)
        super().dataReceived(data)

    def requestDone(self, request) -> None:
        super().requestDone(request)
        self._responses += 1
        self._since_response = 0
        self._response_at = self.site.clock.seconds()
        if not self._gone:
            self._arm(min(KEEPALIVE, self.header_timeout))   # the keep-alive wait, then the next request's deadline

    def _expired(self) -> None:
        self._deadline = None
        if self._gone or self.transport is None:
            return
        if _pending_output(self.transport):
            self._arm()                      # still delivering a response: the idle timeout's business
            return
        if self._responses and not self._since_response:
            self._end()                      # keep-alive that nobody used again: not a cut
            return
        left = self._response_at + self.header_timeout - self.site.clock.seconds() if self._responses else 0
        if left > 0:
            self._arm(left)                  # a next request has begun: its deadline runs from the last response
            return
        self.site.cut += 1
        self.site.limits_log.note(self.client_host, "header-timeout",
                                  f"no complete request within {self.header_timeout:g} s; connection cut")
        # not abortConnection: a response sent with sendfile may still sit in the kernel's
        # socket buffer, and a reset would throw it away; a close lets the kernel deliver it
        self.transport.loseConnection()

    def _end(self) -> None:
        """End a connection with nothing in flight: by reset once the peer has acknowledged
        every byte (GRUB is gone into the kernel and will never answer a FIN), else closed."""
        idle = not self._handlingRequest and not _pending_output(self.transport)
        if idle and _unacknowledged(self.transport) == 0:
            _reset(self.transport)
        else:
            self.transport.loseConnection()  # after what is being sent

    def readConnectionLost(self) -> None:
        """The client closed its side (GRUB does after each file, then boots): the end."""
        self._end()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason) -> None:
        self._gone = True
        self._disarm()
        self.site.release(self.client_host)
        super().connectionLost(reason)


class LimitedSite(Site):
    protocol = LimitedChannel
    noisy = False

    def __init__(self, resource, *, reactor, max_per_client: int, header_timeout: float, metrics=None):
        super().__init__(resource, reactor=reactor)
        self.clock = reactor
        self.max_per_client = max_per_client
        self.header_timeout = header_timeout
        self.connections = ClientCounts()
        self.refused = 0
        self.cut = 0
        self.limits_log = RateLimitedLog(reactor, metrics)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", "?")
        if self.connections[host] >= self.max_per_client:
            self.refused += 1
            self.limits_log.note(host, "too-many-connections",
                                 f"more than {self.max_per_client} connections at once "
                                 "(http.max_connections_per_client); refused with 429")
            return _TooMany(self.clock)
        channel = super().buildProtocol(addr)
        channel.client_host = host
        channel.header_timeout = self.header_timeout
        self.connections.begin(host)
        return channel

    def release(self, host: str) -> None:
        self.connections.end(host)

    def status(self) -> dict:
        return {"connections": self.connections.total, "clients": len(self.connections),
                "refused_too_many": self.refused, "cut_header_timeout": self.cut}
