"""Twisted adapter, one transfer: its ephemeral UDP socket (the transfer ID), its timer and
its file reads. The session machine (session.py) decides what to send; this moves the bytes.
"""
from __future__ import annotations

import errno
import socket
import sys

from twisted.internet.interfaces import IReadDescriptor
from twisted.logger import Logger
from zope.interface import implementer

from . import codec
from .session import Finish, ReadSession, SendBlocks, SendPacket, SetTimer, reply_to_stranger

log = Logger(namespace="bootserverd.tftp")
_LOST = (errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


class _ShortRead(Exception):
    pass


@implementer(IReadDescriptor)
class Transfer:
    """One read transfer on its own ephemeral UDP socket (its transfer ID), driven through
    IReactorFDSet: per-packet cost limits throughput, and udp.Port would log three lines."""

    READAHEAD = 64 * 1024   # bytes per pread: lock-step reads 44 blocks per syscall

    def __init__(self, server, key, peer, file, session: ReadSession,
                 sock: socket.socket) -> None:
        self.server, self.key, self.peer, self.file, self.session = server, key, peer, file, session
        self.sock, self.clock = sock, server.reactor
        self._now = self.clock.seconds
        self.started = self._now()
        self._timer, self._timer_at = None, None       # the DelayedCall and when it fires
        self._ra, self._ra_off = memoryview(b""), 0    # read-ahead buffer and its file offset
        self._closed = False

    def fileno(self) -> int:
        return -1 if self._closed else self.sock.fileno()

    def logPrefix(self) -> str:
        return "tftp-transfer"

    def connectionLost(self, reason) -> None:   # doRead catches everything: a safety net
        self._close(Finish(False, "connection lost"))

    def doRead(self) -> None:
        # One datagram per wake-up: the reactor polls level-triggered, so more queued data comes
        # back next round, and a lock-step peer never has a second one.
        try:
            data, addr = self.sock.recvfrom(65536)
        except OSError:
            return   # EAGAIN, or a queued ICMP error
        try:
            if addr == self.peer:
                self._run(self.session.on_datagram(data, self._now()))
            elif (reply := reply_to_stranger(data)) is not None:
                self._sendto(reply, addr)
        except Exception:
            self._crash()

    def begin(self) -> None:
        self.clock.addReader(self)
        self._event(self.session.start)

    def _timeout(self) -> None:
        self._timer = self._timer_at = None
        self._event(self.session.on_timeout)

    def _event(self, handler) -> None:
        try:
            self._run(handler(self._now()))
        except Exception:
            self._crash()

    def _run(self, actions) -> None:
        for a in actions:
            t = type(a)
            if t is SendBlocks:
                self._send_blocks(a.first, a.last)
            elif t is SetTimer:
                self._set_timer(a.deadline)
            elif t is SendPacket:
                self._sendto(a.data, self.peer)
            elif t is Finish:
                self._close(a)
                return

    def _sendto(self, data, addr) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            pass   # socket buffer full: the packet is lost, retransmission covers it
        except OSError as e:
            if e.errno not in _LOST:
                raise

    def _send_blocks(self, first: int, last: int) -> None:
        bs = self.session.blksize
        offset = (first - 1) * bs
        data = self._read(offset, min(self.session.size - offset, (last - first + 1) * bs))
        send, peer, enc = self._sendto, self.peer, codec.encode_data
        if first == last:
            return send(enc(first, data), peer)
        pos = 0
        for n in range(first, last + 1):
            send(enc(n, data[pos:pos + bs]), peer)
            pos += bs

    def _read(self, offset: int, length: int) -> memoryview:
        """File bytes through a read-ahead buffer of at least one window."""
        start, buf = self._ra_off, self._ra
        if start <= offset and offset + length <= start + len(buf):
            return buf[offset - start:offset - start + length]
        n = min(max(length, self.READAHEAD), self.session.size - offset)
        buf = memoryview(self.file.read(offset, n))
        if len(buf) != n:
            raise _ShortRead(f"file changed during transfer: read {len(buf)} of {n} bytes")
        self._ra, self._ra_off = buf, offset
        return buf[:length]

    def _set_timer(self, deadline: float) -> None:
        # Lazy: ACKs push the deadline on at every packet; rather than moving the DelayedCall,
        # let it fire early and re-arm (the session answers with SetTimer).
        if self._timer_at is not None and deadline >= self._timer_at:
            return
        delay = max(0.0, deadline - self._now())
        if self._timer is None:
            self._timer = self.clock.callLater(delay, self._timeout)
        else:
            self._timer.reset(delay)
        self._timer_at = deadline

    def _crash(self) -> None:
        err, name = sys.exc_info()[1], self.session.request.filename
        if isinstance(err, (_ShortRead, OSError)):
            log.warn("tftp {peer} {file}: read failed: {err}", peer=self.peer, file=name, err=err)
            msg, outcome = "read error", f"read error: {err}"
        else:
            log.failure("tftp {peer} {file}: internal error", peer=self.peer, file=name)
            msg, outcome = "internal error", f"internal error: {err!r}"
        try:
            self._run(self.session.abort(msg, outcome))
        except Exception:
            pass
        self._close(self.session.result or Finish(False, outcome))

    def abort(self, message: str) -> None:
        """Server shutdown: tell the client and finish."""
        self._run(self.session.abort(message, f"aborted: {message}"))

    def _close(self, fin: Finish) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = self._timer_at = None
        self._ra = memoryview(b"")
        self.clock.removeReader(self)
        self.sock.close()
        try:
            self.server.transfer_done(self, fin)
        finally:
            self.file.close()
