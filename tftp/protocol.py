"""Twisted adapter: the listening socket, one ephemeral socket per transfer, timers, file reads.

All protocol decisions are in session.py; this module only moves bytes and keeps the books
(limits, duplicate RRQs, the finished-transfer record).
"""
from __future__ import annotations

import errno
import socket
import sys
from dataclasses import dataclass
from typing import Callable

from twisted.internet.interfaces import IReadDescriptor
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from zope.interface import implementer

from . import codec
from .session import Finish, Policy, ReadSession, SendBlocks, SendPacket, SetTimer

log = Logger(namespace="bootserverd.tftp")


class FileUnavailable(Exception):
    """Raised by the open_file callable: answered with TFTP error `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TransferRecord:
    client: str
    port: int
    filename: str
    mode: str
    size: int | None          # None when the file could not be opened
    bytes: int                # bytes acknowledged by the client
    seconds: float
    blksize: int
    windowsize: int
    options: tuple[tuple[str, str], ...]
    retransmissions: int
    ok: bool
    outcome: str

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


class NetasciiFile:
    """Netascii view of a file, converted while streaming (the transfer reads forward and
    looks back at most one window). The size needs one chunked pass at open."""

    CHUNK = 1 << 16
    MAX_SIZE = 16 << 20   # the size pass runs in the reactor: text files only, not images

    def __init__(self, f, lookback: int) -> None:
        self._f = f
        size = off = 0
        while off < f.size:
            c = f.read(off, min(self.CHUNK, f.size - off))
            if not c:
                break
            size += len(c) + c.count(b"\r") + c.count(b"\n")
            off += len(c)
        self.size = size
        self._lookback = lookback
        self._rewind()

    def _rewind(self) -> None:
        self._buf, self._start, self._in = b"", 0, 0

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._start:
            self._rewind()   # looked back further than we kept: correct, just slower
        end = offset + length
        while self._start + len(self._buf) < end and self._in < self._f.size:
            c = self._f.read(self._in, min(self.CHUNK, self._f.size - self._in))
            if not c:
                break
            self._in += len(c)
            self._buf += codec.to_netascii(c)
        keep = max(self._start, offset - self._lookback)
        if keep > self._start:
            self._buf = self._buf[keep - self._start:]
            self._start = keep
        return self._buf[offset - self._start:end - self._start]

    def close(self) -> None:
        self._f.close()


@implementer(IReadDescriptor)
class Transfer:
    """One read transfer on its own ephemeral UDP socket (its transfer ID).

    The socket is driven directly through IReactorFDSet rather than listenUDP: a transfer is
    short-lived and per-packet cost is what limits throughput, and udp.Port would add three
    unconditional log lines per transfer."""

    READAHEAD = 64 * 1024   # bytes per pread: lock-step reads 44 blocks per syscall

    def __init__(self, server: "TFTPServerProtocol", key, peer, request: codec.Request,
                 file, session: ReadSession, sock: socket.socket) -> None:
        self.server, self.key, self.peer = server, key, peer
        self.request, self.file, self.session = request, file, session
        self.sock = sock
        self.clock = server.reactor
        self._now = self.clock.seconds
        self.started = self._now()
        self._timer = None
        self._timer_at: float | None = None   # when self._timer fires, if pending
        self._ra, self._ra_off = memoryview(b""), 0   # read-ahead buffer and its file offset
        self._closed = False

    # ---- IReadDescriptor ----
    def fileno(self) -> int:
        return self.sock.fileno() if not self._closed else -1

    def logPrefix(self) -> str:
        return "tftp-transfer"

    def connectionLost(self, reason) -> None:
        # Only called if the reactor drops us after an exception escaped doRead (it cannot:
        # doRead catches everything); make sure the books are closed anyway.
        if not self._closed:
            self._close(Finish(False, "connection lost"))

    def doRead(self) -> None:
        # One datagram per wake-up: the reactor polls level-triggered, so more queued data
        # comes back next round, and a lock-step peer never has a second one (a drain loop
        # would pay a failing recvfrom per packet).
        try:
            data, addr = self.sock.recvfrom(65536)
        except OSError:
            return   # EAGAIN, or a queued ICMP error
        self._datagram(data, addr)

    # ---- events ----
    def begin(self) -> None:
        self.clock.addReader(self)
        try:
            self._run(self.session.start(self._now()))
        except Exception:
            self._crash()

    def _datagram(self, data: bytes, addr) -> None:
        try:
            if addr != self.peer:
                # RFC 1350: another TID gets error 5 and the transfer carries on.
                if data[:2] != b"\x00\x05":
                    self._sendto(codec.encode_error(codec.E_UNKNOWN_TID, "unknown transfer ID"),
                                 addr)
                return
            block = codec.ack_block(data)
            if block is not None:
                actions = self.session.on_ack(block, self._now())
            else:
                try:
                    pkt = codec.decode(data)
                except codec.ProtocolError as e:
                    log.debug("tftp {peer}: dropped malformed packet: {err}", peer=self.peer, err=e)
                    return
                actions = self.session.on_packet(pkt, self._now())
            if actions:
                self._run(actions)
        except Exception:
            self._crash()

    def _timeout(self) -> None:
        self._timer = self._timer_at = None
        try:
            self._run(self.session.on_timeout(self._now()))
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
            if e.errno not in (errno.ENOBUFS, errno.ECONNREFUSED, errno.EHOSTUNREACH,
                               errno.ENETUNREACH):
                raise

    def _send_blocks(self, first: int, last: int) -> None:
        bs = self.session.blksize
        offset = (first - 1) * bs
        want = min(self.session.size - offset, (last - first + 1) * bs)
        data = self._read(offset, want)
        send, peer, enc = self._sendto, self.peer, codec.encode_data
        if first == last:
            send(enc(first, data), peer)
            return
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
        # Lazy timer: ACKs push the deadline later on every packet; instead of moving the
        # DelayedCall each time, let it fire early and re-arm (session answers SetTimer).
        at = self._timer_at
        if at is not None and deadline >= at:
            return
        delay = max(0.0, deadline - self._now())
        if self._timer is None:
            self._timer = self.clock.callLater(delay, self._timeout)
        else:
            self._timer.reset(delay)
        self._timer_at = deadline

    def _crash(self) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, (_ShortRead, OSError)):
            log.warn("tftp {peer} {file}: read failed: {err}", peer=self.peer,
                     file=self.request.filename, err=err)
            msg, outcome = "read error", f"read error: {err}"
        else:
            log.failure("tftp {peer} {file}: internal error", peer=self.peer,
                        file=self.request.filename)
            msg, outcome = "internal error", f"internal error: {err!r}"
        if not self.session.done:
            try:
                self._sendto(codec.encode_error(codec.E_UNDEFINED, msg), self.peer)
            except Exception:
                pass
            self.session._finish(False, outcome)
        self._close(self.session.result or Finish(False, outcome))

    def abort(self, message: str) -> None:
        """Server shutdown: tell the client and finish."""
        if not self.session.done:
            self._sendto(codec.encode_error(codec.E_UNDEFINED, message), self.peer)
            self._close(self.session._finish(False, f"aborted: {message}")[0])

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


class _ShortRead(Exception):
    pass


class TFTPServerProtocol(DatagramProtocol):
    """The listening port. `open_file(path, client_ip)` returns an object with `.size`,
    `.read(offset, length)` and `.close()`, or raises FileUnavailable."""

    noisy = False

    def __init__(self, open_file: Callable, policy: Policy = Policy(), reactor=None,
                 max_transfers: int = 256, max_per_client: int = 8,
                 on_finish: Callable[[TransferRecord], None] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.open_file = open_file
        self.policy = policy
        self.reactor = reactor
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.on_finish = on_finish
        self.transfers: dict = {}       # (client addr, RRQ bytes) -> Transfer
        self.per_client: dict[str, int] = {}
        self.refused_busy = 0

    # ---- the well-known port ----
    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._request(data, addr)
        except Exception:
            log.failure("tftp {peer}: internal error handling a request", peer=addr)
            self._reply_error(addr, codec.E_UNDEFINED, "internal error")

    def _request(self, data: bytes, addr) -> None:
        try:
            pkt = codec.decode(data)
        except codec.ProtocolError as e:
            if data[:2] != b"\x00\x05":
                log.info("tftp {host}:{port}: malformed packet: {err}", host=addr[0],
                         port=addr[1], err=e)
                self._reply_error(addr, codec.E_ILLEGAL, f"illegal operation: {e}")
            return
        t = type(pkt)
        if t is codec.Request:
            if pkt.opcode == codec.WRQ:
                self._refuse(addr, pkt, codec.E_ACCESS, "read-only server")
            else:
                self._read_request(data, pkt, addr)
        elif t is codec.Error:
            return
        else:
            # DATA/ACK/OACK to the listening port belong to no transfer.
            self._reply_error(addr, codec.E_UNKNOWN_TID, "unknown transfer ID")

    def _read_request(self, data: bytes, req: codec.Request, addr) -> None:
        key = (addr, data)
        if key in self.transfers:
            log.debug("tftp {peer}: retransmitted RRQ ignored", peer=addr)
            return
        if req.mode not in ("octet", "netascii"):
            self._refuse(addr, req, codec.E_ILLEGAL, f"unsupported mode {req.mode!r}")
            return
        host = addr[0]
        if self.per_client.get(host, 0) >= self.max_per_client:
            self._refuse(addr, req, codec.E_UNDEFINED, "too many transfers from this client")
            return
        if len(self.transfers) >= self.max_transfers:
            # Stay silent: the client retransmits its RRQ and gets a slot when one frees
            # (a boot storm recovers by itself; an error would make the ROM give up).
            self.refused_busy += 1
            log.debug("tftp {peer}: server busy, RRQ dropped", peer=addr)
            return
        try:
            f = self.open_file(req.filename, host)
        except FileUnavailable as e:
            self._refuse(addr, req, e.code, e.message)
            return
        try:
            policy = self.policy
            if req.mode == "netascii":
                if f.size > NetasciiFile.MAX_SIZE:
                    f.close()
                    self._refuse(addr, req, codec.E_UNDEFINED,
                                 "file too large for netascii mode, use octet")
                    return
                f = NetasciiFile(f, lookback=policy.max_windowsize * policy.max_blksize)
            session = ReadSession(req, f.size, policy)
            local = self.transport.getHost().host
            sock = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET,
                                 socket.SOCK_DGRAM)
        except Exception:
            f.close()
            raise
        try:
            sock.setblocking(False)
            # Same local address as the listener, so replies come from where the RRQ went.
            sock.bind((local, 0))
        except Exception:
            sock.close()
            f.close()
            raise
        tr = Transfer(self, key, addr, req, f, session, sock)
        self.transfers[key] = tr
        self.per_client[host] = self.per_client.get(host, 0) + 1
        tr.begin()

    def _refuse(self, addr, req: codec.Request, code: int, message: str) -> None:
        self._reply_error(addr, code, message)
        self._record(addr, req, None, 0, 0.0, 512, 1, (), 0, False, message)

    def _reply_error(self, addr, code: int, message: str) -> None:
        self.transport.write(codec.encode_error(code, message), addr)

    def _transfer_done(self, tr: Transfer, fin: Finish) -> None:
        del self.transfers[tr.key]
        host = tr.peer[0]
        left = self.per_client[host] - 1
        if left:
            self.per_client[host] = left
        else:
            del self.per_client[host]
        s = tr.session
        self._record(tr.peer, tr.request, s.size, s.bytes_acked,
                     self.reactor.seconds() - tr.started, s.blksize, s.windowsize,
                     s.neg.granted, s.retransmitted, fin.ok, fin.outcome)

    def _record(self, addr, req, size, nbytes, seconds, blksize, windowsize, options,
                retrans, ok, outcome) -> None:
        if self.on_finish is None:
            return
        rec = TransferRecord(addr[0], addr[1], req.filename, req.mode, size, nbytes, seconds,
                             blksize, windowsize, options, retrans, ok, outcome)
        try:
            self.on_finish(rec)
        except Exception:
            log.failure("tftp: transfer hook failed")

    def abort_all(self, message: str = "server shutting down") -> None:
        for tr in list(self.transfers.values()):
            tr.abort(message)
