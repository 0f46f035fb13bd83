"""One TFTP read transfer as a pure state machine (RFC 1350 + 2347/2348/2349 + 7440).

Datagrams, packets and timer events go in with `now`; actions come out. The machine never
touches file bytes: `SendBlocks(first, last)` names absolute block numbers (1-based, never
wrapping) and the adapter reads `(n - 1) * blksize` onwards. Block numbers wrap to 16 bits only
on the wire. At the end, `record` is the transfer's `TransferRecord` (the log line, the boot
report, the metrics label).

Sender rules that keep the server safe:
- only an ACK that moves the acknowledged block forward causes sends, and never beyond
  acked + windowsize (no amplification, no Sorcerer's Apprentice on duplicate ACKs);
- an ACK inside the sent window (a receiver saw a gap) resends from the block after it;
- a timeout resends the window from the first unacknowledged block, the interval doubles,
  and after `policy.retries` retransmissions the transfer is abandoned.

One refinement of RFC 7440's "resend from the ACKed block": an ACK that lands inside a
burst we just *resent* is the receiver making progress through that burst on its own ACK
cadence (atftp ACKs every block number divisible by the window size, not every window we
send), so it only slides the window on with new blocks. Resending there would duplicate
blocks already in flight, and with such receivers every later ACK would land mid-window
again: measured at 8192/16 on loopback, half the packets were duplicates (0.2 MB/s).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from . import codec
from bootserverd.ops.transfers import Transfer

MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464
MAX_WINDOWSIZE = 65535


@dataclass(frozen=True)
class Policy:
    max_blksize: int = 1468
    max_windowsize: int = 64
    timeout: float = 1.0        # first retransmission interval, seconds
    retries: int = 5            # retransmissions of one window before giving up
    max_interval: float = 16.0  # back-off ceiling (never below the negotiated timeout)
    # Payload bytes per window. A window arrives as one burst; beyond the receiver's socket
    # buffer (Linux default 208 KiB, ~12 datagrams of 8 KiB counting overhead) its tail is
    # dropped on every window. 64 KiB keeps 1468 x 44 and 8192 x 8.
    max_window_bytes: int = 64 * 1024


# ---- actions ---------------------------------------------------------------------------
class SendBlocks(NamedTuple):
    first: int   # absolute block numbers, inclusive
    last: int


class SendPacket(NamedTuple):
    data: bytes  # an encoded OACK or ERROR


class SetTimer(NamedTuple):
    deadline: float  # call on_timeout(now) at or after this time; replaces any earlier timer


class Finish(NamedTuple):
    ok: bool
    outcome: str  # "ok", "timeout", "client error 8: ...", ...


class OptionRefused(Exception):
    pass


@dataclass(frozen=True)
class TransferRecord:
    """One RRQ at its end, served or refused: for the log line, the boot report and metrics."""
    client: str
    port: int
    filename: str
    mode: str
    size: int | None          # None when the request was refused before a transfer began
    bytes: int                # bytes acknowledged by the client
    seconds: float
    blksize: int
    windowsize: int
    options: tuple[tuple[str, str], ...]
    retransmissions: int
    ok: bool
    outcome: str

    @classmethod
    def refused(cls, peer, request: codec.Request, message: str) -> "TransferRecord":
        return cls(peer[0], peer[1], request.filename, request.mode, None, 0, 0.0, 512, 1, (), 0,
                   False, message)

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0

    @property
    def kind(self) -> str:
        """The outcome in one word (a metrics label): done | refused | probe | aborted |
        stalled | failed. A probe: UEFI (EDK2) asks for tsize, then ends with error 8 before
        downloading for real (GRUB: error 0 "closed"), which is no failure a sysadmin should chase."""
        o = self.outcome
        if self.ok:
            return "done"
        if self.size is None or o.startswith("option refused"):
            return "refused"
        if o.startswith(("client refused the options", "client closed after the options")):
            return "probe"
        if o.startswith("client"):
            return "aborted"
        return "stalled" if o.startswith("timeout") else "failed"

    def as_transfer(self) -> Transfer:
        what = f"TFTP {self.filename} {self.bytes} bytes" + ("" if self.ok else f": {self.outcome}")
        return Transfer("tftp", self.client, self.filename, self.bytes, self.seconds, self.kind, self.ok, what)

    def line(self) -> str:
        opts = " ".join(f"{k}={v}" for k, v in self.options) or "no options"
        return (f"TFTP {self.client}:{self.port} {self.filename!r} ({self.mode}): {self.bytes} bytes"
                f" in {self.seconds:.3f} s ({self.mbps:.1f} MB/s) blksize={self.blksize}"
                f" windowsize={self.windowsize} [{opts}] retransmissions={self.retransmissions}:"
                f" {self.outcome}")


_UNKNOWN_TID = codec.encode_error(codec.E_UNKNOWN_TID, "unknown transfer ID")


def reply_to_stranger(data: bytes) -> bytes | None:
    """RFC 1350: a datagram to a transfer's port from another TID gets error 5 and the
    transfer carries on; an ERROR is never answered."""
    return None if data[:2] == b"\x00\x05" else _UNKNOWN_TID


def _int_option(name: str, value: str, lo: int, hi: int | None) -> int:
    if not value.isdigit() or not value.isascii():
        raise OptionRefused(f"{name}={value!r} is not a number")
    v = int(value)
    if v < lo or (hi is not None and v > hi):
        raise OptionRefused(f"{name}={value} out of range")
    return v


@dataclass(frozen=True)
class Negotiated:
    blksize: int = 512
    windowsize: int = 1
    timeout: float | None = None  # client-requested retransmission interval
    granted: tuple[tuple[str, str], ...] = ()  # what goes in the OACK, in request order


def negotiate(options, size: int, policy: Policy) -> Negotiated:
    """Options granted for a read of `size` bytes. Unknown options are ignored (RFC 2347);
    malformed values of known ones raise OptionRefused (error 8)."""
    blksize, windowsize, timeout = 512, 1, None
    granted: list[tuple[str, str]] = []
    seen = set()
    for name, value in options:
        if name in seen:
            continue
        seen.add(name)
        if name == "blksize":
            # Above 65464 is clamped rather than refused: the client only asks for a maximum.
            v = _int_option(name, value, MIN_BLKSIZE, None)
            blksize = min(v, MAX_BLKSIZE, max(policy.max_blksize, MIN_BLKSIZE))
            granted.append((name, str(blksize)))
        elif name == "tsize":
            _int_option(name, value, 0, None)
            # curl (and so libcurl-based clients) rejects an OACK with tsize 0; leaving it
            # out is the RFC 2349 way of not granting it and works with every client.
            if size:
                granted.append((name, str(size)))
        elif name == "timeout":
            timeout = _int_option(name, value, 1, 255)
            granted.append((name, str(timeout)))
        elif name == "windowsize":
            windowsize = _int_option(name, value, 1, MAX_WINDOWSIZE)
            granted.append((name, None))   # value fixed below, once blksize is known
    if any(n == "windowsize" for n, _ in granted):
        windowsize = max(1, min(windowsize, policy.max_windowsize,
                                policy.max_window_bytes // blksize))
        granted = [(n, str(windowsize) if n == "windowsize" else v) for n, v in granted]
    return Negotiated(blksize, windowsize, timeout, tuple(granted))


_WAIT_OACK, _SENDING, _DONE = "wait-oack-ack", "sending", "done"


class ReadSession:
    """Server side of one RRQ. Create it, call start(now), then feed on_packet / on_ack /
    on_timeout and execute the returned actions in order."""

    def __init__(self, request: codec.Request, size: int, policy: Policy) -> None:
        self.request = request
        self.size = size
        self.policy = policy
        self.refused: str | None = None
        try:
            self.neg = negotiate(request.options, size, policy)
        except OptionRefused as e:
            self.neg, self.refused = Negotiated(), str(e)
        self.blksize = self.neg.blksize
        self.windowsize = self.neg.windowsize
        # Always one short (possibly empty) final block.
        self.nblocks = size // self.blksize + 1
        self.base_interval = float(self.neg.timeout or policy.timeout)
        self.interval = self.base_interval
        self.acked = 0          # highest absolute block acknowledged
        self.sent = 0           # highest absolute block sent
        self.tries = 0          # retransmissions since the last progress
        self.retransmitted = 0  # packets (blocks or OACKs) sent more than once, in total
        self.deadline: float | None = None
        self._resent = (1, 0)   # first/last block of the latest go-back burst (empty)
        self.state = _SENDING
        self.result: Finish | None = None

    # ---- properties for the log line ----
    @property
    def bytes_acked(self) -> int:
        return min(self.acked * self.blksize, self.size)

    @property
    def done(self) -> bool:
        return self.state == _DONE

    # ---- events ----
    def start(self, now: float) -> tuple:
        if self.refused is not None:
            return self._fail(codec.E_OPTION, f"option refused: {self.refused}",
                              f"option refused: {self.refused}")
        if self.neg.granted:
            self.state = _WAIT_OACK
            self._oack = codec.encode(codec.OAck(self.neg.granted))
            return (SendPacket(self._oack), self._arm(now))
        return self._send_window(now)

    def on_ack(self, block: int, now: float) -> tuple:
        """ACK with 16-bit block number `block` from the transfer's peer."""
        st = self.state
        if st == _SENDING:
            # The one absolute block in [acked, sent] with these low 16 bits (windows are
            # far smaller than 65536, so this is unambiguous).
            n = self.acked + ((block - self.acked) & 0xFFFF)
            if n > self.sent or n == self.acked:
                return ()   # duplicate or stray ACK: never a send (Sorcerer's Apprentice)
            self.acked = n
            self.tries = 0
            self.interval = self.base_interval
            if n == self.nblocks:
                return self._finish(True, "ok")
            if n < self.sent:
                lo, hi = self._resent
                if lo <= n + 1 <= hi:     # progress through our resend: slide, no duplicates
                    last = min(n + self.windowsize, self.nblocks)
                    if last <= self.sent:
                        return (self._arm(now),)
                    first, self.sent = self.sent + 1, last
                    return (SendBlocks(first, last), self._arm(now))
                return self._send_window(now, goback=True)   # a gap at the receiver
            return self._send_window(now)
        if st == _WAIT_OACK:
            if block != 0:
                return ()
            self.tries = 0
            self.interval = self.base_interval
            self.state = _SENDING
            return self._send_window(now)
        return ()

    def on_datagram(self, data: bytes, now: float) -> tuple:
        """A datagram from the transfer's peer. A malformed one is dropped: the timer covers it."""
        block = codec.ack_block(data)   # the hot path: no decode, no allocation
        if block is not None:
            return self.on_ack(block, now)
        try:
            pkt = codec.decode(data)
        except codec.ProtocolError:
            return ()
        return self.on_packet(pkt, now)

    def on_packet(self, p: codec.Packet, now: float) -> tuple:
        if self.state == _DONE:
            return ()
        if isinstance(p, codec.Ack):
            return self.on_ack(p.block, now)
        if isinstance(p, codec.Error):
            what = "aborted"
            if self.state == _WAIT_OACK and p.code == codec.E_OPTION:
                what = "refused the options"        # EDK2 reads tsize, then ends with error 8
            elif self.acked == 0 and p.code == codec.E_UNDEFINED and p.message == "closed":
                what = "closed after the options"   # GRUB opens a file for its size, reads a block, closes it
            return self._finish(False, f"client {what}: error {p.code} {p.message!r}")
        kind = type(p).__name__.upper()
        return self._fail(codec.E_ILLEGAL, f"illegal operation: {kind} on a read transfer",
                          f"client sent {kind}")

    def on_timeout(self, now: float) -> tuple:
        if self.state == _DONE or self.deadline is None:
            return ()
        if now < self.deadline:
            return (SetTimer(self.deadline),)
        if self.tries >= self.policy.retries:
            last = self.acked + 1 == self.nblocks and self.sent == self.nblocks
            return self._finish(False, "timeout waiting for the final ACK" if last
                                else f"timeout after {self.tries} retransmissions")
        self.tries += 1
        self.interval = min(self.interval * 2, max(self.policy.max_interval, self.base_interval))
        if self.state == _WAIT_OACK:
            self.retransmitted += 1
            return (SendPacket(self._oack), self._arm(now))
        return self._send_window(now, goback=True)

    def abort(self, message: str, outcome: str) -> tuple:
        """The server ends the transfer (shutdown, a read error): error 0 to the peer and
        Finish; nothing once the transfer is done."""
        if self.state == _DONE:
            return ()
        return self._fail(codec.E_UNDEFINED, message, outcome)

    def record(self, peer, seconds: float, finish: Finish) -> TransferRecord:
        r = self.request
        return TransferRecord(peer[0], peer[1], r.filename, r.mode, self.size, self.bytes_acked,
                              seconds, self.blksize, self.windowsize, self.neg.granted,
                              self.retransmitted, finish.ok, finish.outcome)

    # ---- helpers ----
    def _arm(self, now: float) -> SetTimer:
        self.deadline = now + self.interval
        return SetTimer(self.deadline)

    def _send_window(self, now: float, goback: bool = False) -> tuple:
        first = self.acked + 1
        last = min(self.acked + self.windowsize, self.nblocks)
        if goback:
            self._resent = (first, last)
        if first <= self.sent:
            self.retransmitted += min(last, self.sent) - first + 1
        if last > self.sent:
            self.sent = last
        return (SendBlocks(first, last), self._arm(now))

    def _finish(self, ok: bool, outcome: str) -> tuple:
        self.state = _DONE
        self.deadline = None
        self.result = Finish(ok, outcome)
        return (self.result,)

    def _fail(self, code: int, message: str, outcome: str) -> tuple:
        return (SendPacket(codec.encode_error(code, message)),) + self._finish(False, outcome)
