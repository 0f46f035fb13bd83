"""The peer boot server (pair.*): every pair.check_interval seconds, read its `/images/`
listing over HTTP (a Twisted protocol: nothing blocks the reactor) and compare it with our
published images (bootserverd.images.peer). A line is logged per image whose state changed
and when the peer becomes unreachable or reachable again, never per poll. Public, for
/status: status()."""

from __future__ import annotations

import json
import time
from typing import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from urllib.parse import urlsplit

from twisted.internet.protocol import ClientFactory, Protocol

from bootserverd.images.peer import Comparison, ListingError, changes, compare, parse_listing

TIMEOUT = 10.0          # seconds for one request (connect + answer)
MAX_LISTING = 16 << 20  # bytes: a listing of thousands of images is far less


def peer_url(pair, http) -> str | None:
    """pair.peer_url, else http://<the peer's address>:<http.listen port> (both servers read
    one file, so the peer listens where we do)."""
    if pair.peer_url:
        return pair.peer_url.rstrip("/")
    return f"http://{pair.peer}:{http.listen.port}" if pair.peer is not None else None


class _Get(Protocol):
    """One HTTP/1.0 GET, the whole answer read until the peer closes (our listener speaks
    HTTP/1.0 back: no chunks). Neither twisted.web.client nor twisted.internet.endpoints:
    importing them imports TLS support, which needs service_identity, a dependency for
    nothing else here."""

    def __init__(self, host: str, path: str):
        self.request = (f"GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\n"
                        f"Connection: close\r\n\r\n").encode()
        self.done: defer.Deferred = defer.Deferred()     # set by http_get
        self.data = bytearray()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > MAX_LISTING:
            self.transport.abortConnection()

    def connectionLost(self, reason) -> None:
        if self.done.called:
            return
        head, sep, body = bytes(self.data).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].split()
        if not sep or len(status) < 2 or not status[0].startswith(b"HTTP/"):
            self.done.errback(ListingError(f"no HTTP answer ({len(self.data)} bytes)"))
        elif status[1] != b"200":
            self.done.errback(ListingError(f"HTTP {status[1].decode('latin-1')} for /images/"))
        else:
            self.done.callback(body)


def http_get(reactor, url: str) -> defer.Deferred:
    """The body of `url` (http:// only) when the answer is 200; fails otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return defer.fail(ValueError(f"not an http:// URL: {url}"))
    protocol = _Get(parts.netloc, parts.path or "/")
    factory = _Once(protocol)
    connector = reactor.connectTCP(parts.hostname, parts.port or 80, factory, timeout=TIMEOUT)
    protocol.done = defer.Deferred(lambda d: connector.disconnect())
    return protocol.done


class _Once(ClientFactory):
    def __init__(self, protocol: _Get):
        self.protocol_ = protocol

    def buildProtocol(self, addr):
        return self.protocol_

    def clientConnectionFailed(self, connector, reason) -> None:
        if not self.protocol_.done.called:
            self.protocol_.done.errback(reason)


class PeerService(Service):
    name = "peer"
    log = Logger(namespace="bootserverd.peer")

    def __init__(self, pair, http, images, reactor=None, clock: Callable[[], float] = time.time):
        from twisted.internet import reactor as default_reactor
        self.pair = pair
        self.url = peer_url(pair, http)
        self.images = images
        self.reactor = reactor or default_reactor
        self.clock = clock
        self.loop: LoopingCall | None = None
        self.reachable: bool | None = None       # None: not checked yet
        self.error: str | None = None
        self.last_check: float | None = None
        self.last_ok: float | None = None
        self.theirs: dict[str, tuple[int, str]] | None = None
        self.comparison: Comparison | None = None     # the last one logged (seen twice)
        self._seen: Comparison | None = None          # the latest one
        self.checks = 0
        self._unsubscribe: Callable[[], None] | None = None
        self._inflight: defer.Deferred | None = None

    # -- lifecycle --
    def startService(self) -> None:
        super().startService()
        self.log.info("peer {url}: comparing images every {s:g} s", url=self.url,
                      s=self.pair.check_interval)
        self._unsubscribe = self.images.subscribe(self._ours_changed)
        self.loop = LoopingCall(self.check)
        self.loop.clock = self.reactor
        self.loop.start(self.pair.check_interval, now=True)

    def stopService(self):
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._inflight is not None:
            self._inflight.cancel()
        return super().stopService()

    # -- one check --
    def check(self) -> defer.Deferred:
        """Fetch the peer's listing and compare; never fails (the LoopingCall goes on)."""
        if self._inflight is not None:            # a slow peer: one request at a time
            return defer.succeed(None)
        d = http_get(self.reactor, f"{self.url}/images/")
        d.addTimeout(TIMEOUT, self.reactor)       # connecting, the answer and its body
        d.addCallbacks(self._got, self._failed)
        self._inflight = d

        def done(result):                         # also when d has fired already
            self._inflight = None
            return None
        return d.addBoth(done)

    def _got(self, body: bytes) -> None:
        self.checks += 1
        self.last_check = self.clock()
        try:
            theirs = parse_listing(json.loads(body))
        except (ValueError, ListingError) as exc:
            return self._unreachable(f"not an image listing: {exc}")
        self.last_ok = self.last_check
        if self.reachable is not True:
            self.log.info("peer {url}: reachable, {n} images published there", url=self.url,
                          n=len(theirs))
        self.reachable, self.error, self.theirs = True, None, theirs
        self._compare()

    def _failed(self, failure) -> None:
        if failure.check(defer.CancelledError) and not self.running:
            return None
        self.checks += 1
        self.last_check = self.clock()
        self._unreachable(failure.getErrorMessage() or failure.type.__name__)

    def _unreachable(self, why: str) -> None:
        if self.reachable is not False or self.error != why:
            self.log.warn("peer {url}: unreachable ({why}); images not compared", url=self.url,
                          why=why)
        self.reachable, self.error = False, why

    def _ours_changed(self) -> None:
        if self.theirs is not None:
            self._compare()

    def _compare(self) -> None:
        """Log what changed once two comparisons in a row agree: a server still indexing its
        images at a start, or a copy in progress, is not reported as a change and back."""
        ours = {image.name: (image.size, image.sha256) for image in self.images.published()}
        after = compare(ours, self.theirs)
        if after == self.comparison or after != self._seen:
            self._seen = after
            return
        for level, line in changes(self.comparison, after):
            getattr(self.log, level)("peer {url}: {line}", url=self.url, line=line)
        self.comparison = after

    # -- /status --
    def status(self) -> dict:
        """url, reachable (None before the first check), last_check and last_ok (epoch s),
        error, and the image comparison of the last listing: missing (ours, not there),
        differing (same name, other size or sha256), only_on_peer, same (a count)."""
        out = {"url": self.url, "this_server": str(self.pair.this_server),
               "reachable": self.reachable, "last_check": self.last_check,
               "last_ok": self.last_ok, "error": self.error, "checks": self.checks}
        out.update(self._seen.as_dict() if self._seen is not None else
                   {"missing": None, "differing": None, "only_on_peer": None, "same": None})
        return out
