"""Sending a file (or part of it) as an HTTP response body without reading it whole.

Two ways, chosen per response:
- ``sendfile``: when the file has a descriptor and the connection is plain TCP with nothing
  queued, a writer on a dup of the socket sends the headers and then the bytes with
  ``os.sendfile`` straight from the page cache, whenever the socket is writable.
- ``copy``: otherwise a push producer reads ``CHUNK`` bytes at a time (``pread``) and writes
  them through Twisted, which pauses it while the socket buffer is full.
Either way a transfer that makes no progress for ``stall_timeout`` seconds is aborted, and
one ``TransferRecord`` is reported at the end (done, aborted or stalled). A laptop update's
transfer also takes its bytes from the updates' shared bucket (services/http/bucket.py) and
waits, off the reactor's lists, while it is empty.
"""

from __future__ import annotations

import bisect
import errno
import os
import time
from dataclasses import dataclass, field
from typing import Callable

from twisted.internet import interfaces, tcp
from twisted.web.http import RESPONSES
from zope.interface import implementer

from bootserverd.ops.transfers import Transfer

from .bucket import TokenBucket

CHUNK = 1 << 20                 # copy path: bytes per write
SENDFILE_SLICE = 4 << 20        # sendfile path: at most this much per reactor turn (fairness)


@dataclass
class TransferRecord:
    client: str
    method: str
    path: str
    status: int
    start: int
    length: int                 # bytes the response promised
    size: int                   # whole file
    mode: str = "copy"          # copy | sendfile | head
    sent: int = 0
    began: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    outcome: str = "done"       # done | aborted | stalled
    parts: int = 0              # a multipart/byteranges answer: how many ranges

    @property
    def ok(self) -> bool:
        return self.outcome == "done"

    @property
    def mbps(self) -> float:
        return self.sent / 1e6 / self.seconds if self.seconds > 0 else 0.0

    def as_transfer(self) -> Transfer:
        what = f"HTTP {self.path} {self.sent} bytes" + ("" if self.ok else f": {self.outcome}")
        return Transfer("http", self.client, self.path, self.sent, self.seconds, self.outcome, self.ok, what)

    def line(self) -> str:
        span = f" range {self.start}-{self.start + self.length - 1}/{self.size}" if self.status == 206 else ""
        if self.parts > 1:
            span = f" {self.parts} ranges of {self.size}"
        return (f"HTTP {self.client} {self.method} {self.path} {self.status}{span}: {self.sent} bytes "
                f"in {self.seconds:.3f} s ({self.mbps:.1f} MB/s, {self.mode}): {self.outcome}")


class SegmentedFile:
    """A response body made of literal bytes and (offset, length) spans of ``file``, read like
    a file; it has no descriptor, so it goes out on the copy path. Closing closes ``file``."""

    def __init__(self, file, segments: list, size: int):
        self.file = file
        self.segments = segments
        self.size = size
        self.starts = []
        at = 0
        for segment in segments:
            self.starts.append(at)
            at += len(segment) if isinstance(segment, bytes) else segment[1]

    def read(self, offset: int, length: int) -> bytes:
        out = []
        index = max(bisect.bisect_right(self.starts, offset) - 1, 0)
        end = min(offset + length, self.size)
        while offset < end and index < len(self.segments):
            segment, begins = self.segments[index], self.starts[index]
            within = offset - begins
            if isinstance(segment, bytes):
                piece = segment[within:within + end - offset]
            else:
                piece = self.file.read(segment[0] + within, min(segment[1] - within, end - offset))
                if not piece:
                    break                       # the file shrank: the caller aborts
            out.append(piece)
            offset += len(piece)
            if offset - begins >= (len(segment) if isinstance(segment, bytes) else segment[1]):
                index += 1
        return b"".join(out)

    def fileno(self) -> None:
        return None

    def close(self) -> None:
        self.file.close()


def _sendfile_transport(request):
    """The plain TCP transport when sendfile may be used on it, else None."""
    transport = getattr(request.channel, "transport", None)
    if not isinstance(transport, tcp.Connection) or interfaces.ISSLTransport.providedBy(transport):
        return None
    if getattr(transport, "TLS", False):
        return None
    # Anything still queued in Twisted's buffer would be overtaken by our direct writes.
    queued = getattr(transport, "_tempDataBuffer", None)
    data = getattr(transport, "dataBuffer", None)
    if queued is None or data is None or queued or len(data) > getattr(transport, "offset", 0):
        return None
    return transport


def _header_block(request) -> bytes:
    code = request.code
    reason = request.code_message or RESPONSES.get(code, b"")
    lines = [request.clientproto + b" " + str(code).encode() + b" " + reason]
    for name, values in request.responseHeaders.getAllRawHeaders():
        lines += [name + b": " + value for value in values]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class FileBody:
    """Sends ``length`` bytes of ``file`` from ``start``; Content-Length and the other headers
    must already be set on the request. Finishes the request and closes the file."""

    def __init__(self, request, file, record: TransferRecord, reactor,
                 on_done: Callable[[TransferRecord], None], stall_timeout: float = 60.0,
                 allow_sendfile: bool = True, bucket: TokenBucket | None = None):
        """``bucket``: the share this transfer draws from (None: it never waits)."""
        self.request = request
        self.bucket = bucket if bucket is not None and bucket.limited else None
        self.file = file
        self.record = record
        self.reactor = reactor
        self.on_done = on_done
        self.stall_timeout = stall_timeout
        self.allow_sendfile = allow_sendfile
        self.offset = record.start
        self.remaining = record.length
        self._paused = False
        self._finished = False
        self._writer = None
        self._stall = None
        self._wake = None            # the call that ends a wait for the bucket
        self._reserved = 0           # bytes the bucket granted for after that wait

    def start(self) -> None:
        self.request.notifyFinish().addErrback(lambda _: self._end("aborted", finish=False))
        if self.request.method == b"HEAD" or self.remaining == 0:
            self.record.mode = "head" if self.request.method == b"HEAD" else "copy"
            self._end("done")
            return
        transport = _sendfile_transport(self.request) if self.allow_sendfile else None
        if transport is not None and self.file.fileno() is not None:
            self.record.mode = "sendfile"
            self._writer = _SendfileWriter(self, transport, _header_block(self.request))
            self.request.startedWriting = 1          # we wrote the headers ourselves
            self._arm_stall()
            self.reactor.addWriter(self._writer)
            return
        self.record.mode = "copy"
        self.request.registerProducer(self, True)
        self._arm_stall()
        self.resumeProducing()

    # -- stall watchdog --
    def _arm_stall(self) -> None:
        if self._stall is not None and self._stall.active():
            self._stall.reset(self.stall_timeout)
        elif not self._finished:
            self._stall = self.reactor.callLater(self.stall_timeout, self._stalled)

    def _stalled(self) -> None:
        self._end("stalled", finish=False)
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection() if hasattr(transport, "abortConnection") else transport.loseConnection()

    # -- IPushProducer (copy path) --
    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        if self._wake is not None:
            return                    # waiting for the bucket: the wake goes on
        while not self._paused and self.remaining > 0 and not self._finished:
            want = self.allowance(min(CHUNK, self.remaining), self.resumeProducing)
            if want is None:
                return
            data = self.file.read(self.offset, want)
            if not data:                      # the file shrank under us: cannot keep the promise
                self._end("aborted", finish=False)
                self.request.channel.transport.loseConnection()
                return
            self.offset += len(data)
            self.remaining -= len(data)
            self.record.sent += len(data)
            self._arm_stall()
            self.request.write(data)
        if self.remaining == 0 and not self._finished:
            self.request.unregisterProducer()
            self._end("done")

    def stopProducing(self) -> None:
        self._end("aborted", finish=False)

    # -- the updates' bandwidth share --
    def allowance(self, want: int, then: Callable[[], None]) -> int | None:
        """Bytes to send now (at most ``want``), or None: ``then`` is called when the bucket
        has granted this transfer its next bytes."""
        if self.bucket is None:
            return want
        if self._reserved:
            granted, self._reserved = self._reserved, 0
        else:
            granted, wait = self.bucket.grant(self.reactor.seconds(), want)
            if wait > 0:
                self._reserved = granted
                self._wake = self.reactor.callLater(wait, self._woken, then)
                return None
        if granted > want:
            self.bucket.refund(granted - want)
        return min(granted, want)

    def _woken(self, then: Callable[[], None]) -> None:
        self._wake = None
        if not self._finished:
            then()

    def _cancel_wake(self) -> None:
        if self._wake is not None and self._wake.active():
            self._wake.cancel()
        self._wake = None
        if self._reserved:
            self.bucket.refund(self._reserved)
            self._reserved = 0

    # -- sendfile path --
    def sent(self, count: int) -> None:
        self.offset += count
        self.remaining -= count
        self.record.sent += count
        self._arm_stall()
        if self.remaining == 0:
            self._end("done")

    def _end(self, outcome: str, finish: bool = True) -> None:
        if self._finished:
            return
        self._finished = True
        self._cancel_wake()
        if self._stall is not None and self._stall.active():
            self._stall.cancel()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.file.close()
        record = self.record
        record.outcome = outcome
        record.seconds = time.monotonic() - record.began
        if finish and not self.request._disconnected and not self.request.finished:
            self.request.finish()
        self.on_done(record)


@implementer(interfaces.IWriteDescriptor)
class _SendfileWriter:
    """A writable descriptor on a dup of the client socket: headers, then os.sendfile."""

    def __init__(self, body: FileBody, transport, headers: bytes):
        self.body = body
        self.transport = transport
        self.fd = os.dup(transport.fileno())
        self.pending = headers
        self.closed = False

    def fileno(self) -> int:
        return self.fd if not self.closed else -1

    def logPrefix(self) -> str:
        return "http-sendfile"

    def doWrite(self):
        body = self.body
        budget = SENDFILE_SLICE
        try:
            while self.pending:
                n = os.write(self.fd, self.pending)
                self.pending = self.pending[n:]
            if body.bucket is not None:
                budget = body.allowance(min(budget, body.remaining), self._resume_writing)
                if budget is None:       # off the reactor's writers until then
                    body.reactor.removeWriter(self)
                    return None
            source = body.file.fileno()
            while budget > 0 and body.remaining > 0 and not self.closed:
                n = os.sendfile(self.fd, source, body.offset, min(budget, body.remaining))
                if n == 0:                    # the file shrank under us
                    self._fail("aborted")
                    return None
                budget -= n
                body.sent(n)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EINTR):
                self._fail("aborted")
                return None
        if budget and body.bucket is not None and not self.closed:
            body.bucket.refund(budget)        # granted, not sent: the socket was full
        return None

    def _resume_writing(self) -> None:
        if not self.closed:
            self.body.reactor.addWriter(self)

    def _fail(self, outcome: str) -> None:
        self.body._end(outcome, finish=False)
        self.transport.loseConnection()

    def close(self) -> None:
        if not self.closed:
            self.body.reactor.removeWriter(self)
            os.close(self.fd)
            self.closed = True

    def connectionLost(self, reason) -> None:
        """The reactor calls this if doWrite raised: drop the connection, report the transfer."""
        self._fail("aborted")
