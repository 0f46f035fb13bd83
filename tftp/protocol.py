"""Twisted adapter: the listening socket, one ephemeral socket per transfer, timers, file reads.

It only does I/O. The decisions are beside it, pure: admission.py (which datagrams start a
transfer, the limits, the netascii view), session.py (one transfer, its record).
"""
from __future__ import annotations

import errno
import socket
import sys
from typing import Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from bootserverd.ops.ratelimit import LogThrottle, suffix

from . import codec
from .admission import Admission, Admit, FileUnavailable, Refuse
from .session import (Finish, Policy, ReadSession, SendBlocks, SendPacket, SetTimer, TransferRecord,
                      reply_to_stranger)

log = Logger(namespace="bootserverd.tftp")
_LOST = (errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH)


class _ShortRead(Exception):
    pass


@implementer(IReadDescriptor)
class Transfer:
    """One read transfer on its own ephemeral UDP socket (its transfer ID), driven through
    IReactorFDSet: per-packet cost limits throughput, and udp.Port would log three lines."""

    READAHEAD = 64 * 1024   # bytes per pread: lock-step reads 44 blocks per syscall

    def __init__(self, server: "TFTPServerProtocol", key, peer, file, session: ReadSession,
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
            self.server._transfer_done(self, fin)
        finally:
            self.file.close()


class TFTPServerProtocol(DatagramProtocol):
    """The listening port. `open_file(path, client_ip)` returns an object with `.size`,
    `.read(offset, length)` and `.close()`, or raises FileUnavailable."""

    noisy = False

    def __init__(self, open_file: Callable, policy: Policy = Policy(), reactor=None,
                 max_transfers: int = 256, max_per_client: int = 8,
                 on_finish: Callable[[TransferRecord], None] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.open_file, self.policy, self.reactor, self.on_finish = open_file, policy, reactor, on_finish
        self.admission = Admission(max_transfers, max_per_client)
        self.transfers: dict = {}       # Admit.key -> Transfer
        self.throttle = LogThrottle()

    def reconfigure(self, policy: Policy, max_transfers: int, max_per_client: int) -> None:
        """New limits and options for new transfers; running ones keep theirs."""
        self.policy = policy
        self.admission.max_transfers, self.admission.max_per_client = max_transfers, max_per_client

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            verdict = self.admission.decide(data, addr, self.transfers)
            if type(verdict) is Admit:
                self._start(verdict, addr)
            elif type(verdict) is Refuse:
                self._refuse(addr, verdict)
            elif verdict.reason:
                self._note(log.debug, addr, verdict.reason)
        except Exception:
            log.failure("tftp {peer}: internal error handling a request", peer=addr)
            self.transport.write(codec.encode_error(codec.E_UNDEFINED, "internal error"), addr)

    def _start(self, admit: Admit, addr) -> None:
        req = admit.request
        try:
            f = self.open_file(req.filename, addr[0])
        except FileUnavailable as e:
            return self._refuse(addr, Refuse(e.code, e.message, req))
        try:
            view = self.admission.view(req, f, self.policy)
            if type(view) is Refuse:
                f.close()
                return self._refuse(addr, view)
            session = ReadSession(req, view.size, self.policy)
            local = self.transport.getHost().host
            sock = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
        except Exception:
            f.close()
            raise
        try:
            sock.setblocking(False)
            sock.bind((local, 0))   # the listener's address: replies come from where the RRQ went
        except Exception:
            sock.close()
            view.close()
            raise
        self.transfers[admit.key] = tr = Transfer(self, admit.key, addr, view, session, sock)
        self.admission.begin(addr[0])
        tr.begin()

    def _refuse(self, addr, refusal: Refuse) -> None:
        self.transport.write(codec.encode_error(refusal.code, refusal.message), addr)
        if refusal.malformed is not None:
            self._note(log.info, addr, "malformed packet", f": {refusal.malformed}")
        if refusal.request is not None:
            self._report(TransferRecord.refused(addr, refusal.request, refusal.message))

    def _note(self, emit, addr, what: str, detail: str = "") -> None:
        """One line per client and `what` a minute; the next says how many were hidden."""
        hidden = self.throttle.admit((addr[0], what), self.reactor.seconds())
        if hidden is not None:
            emit("tftp {host}:{port}: {what}{detail}{more}", host=addr[0], port=addr[1], what=what,
                 detail=detail, more=suffix(hidden))

    def _transfer_done(self, tr: Transfer, fin: Finish) -> None:
        del self.transfers[tr.key]
        self.admission.end(tr.peer[0])
        self._report(tr.session.record(tr.peer, self.reactor.seconds() - tr.started, fin))

    def _report(self, record: TransferRecord) -> None:
        if self.on_finish is not None:
            try:
                self.on_finish(record)
            except Exception:
                log.failure("tftp: transfer hook failed")

    def abort_all(self, message: str = "server shutting down") -> None:
        for tr in list(self.transfers.values()):
            tr.abort(message)
