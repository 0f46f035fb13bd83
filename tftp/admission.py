"""Which datagrams on the well-known port start a transfer (pure: bytes and counts in, a verdict out).

The adapter hands over each datagram, its peer and the running transfers (a mapping keyed by
`Admit.key`); `decide` answers with one of:
- `Admit`: open the file, take `view` of it, start a ReadSession; `begin(host)` then, and
  `end(host)` when the transfer finishes (the per-client counts live here);
- `Refuse`: answer with that TFTP error (a refused request is recorded like a transfer);
- `Ignore`: say nothing (a retransmitted RRQ of a running transfer, an ERROR, a full server).

No rule depends on time: a full server stays silent and the client's own retransmission of
its RRQ is the retry.
"""
from __future__ import annotations

from typing import NamedTuple

from bootserverd.ops.clients import ClientCounts

from . import codec
from .netascii import MAX_SIZE as NETASCII_MAX_SIZE, NetasciiFile

MODES = ("octet", "netascii")


class FileUnavailable(Exception):
    """Raised by the adapter's open_file callable: answered with TFTP error `code`."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Admit(NamedTuple):
    key: tuple                 # (peer, RRQ bytes): a retransmission of it is a duplicate
    request: codec.Request


class Refuse(NamedTuple):
    code: int
    message: str
    request: codec.Request | None = None   # a refused request (recorded); None: a stray packet
    malformed: str | None = None           # why the datagram is not TFTP (worth a log line)


class Ignore(NamedTuple):
    reason: str = ""           # for the debug log; "" when not worth a line


DUPLICATE = Ignore("retransmitted RRQ ignored")
# Silent at the limit: the client retransmits its RRQ and gets a slot when one frees (a boot
# storm recovers by itself; an error would make the ROM give up).
BUSY = Ignore("server busy, RRQ dropped")
SILENT = Ignore()


class Admission:
    def __init__(self, max_transfers: int = 256, max_per_client: int = 8) -> None:
        self.max_transfers = max_transfers
        self.max_per_client = max_per_client
        self.per_client = ClientCounts()        # host -> running transfers
        self.refused_busy = 0                   # RRQs dropped at max_transfers

    def decide(self, data: bytes, peer: tuple, transfers) -> Admit | Refuse | Ignore:
        try:
            pkt = codec.decode(data)
        except codec.ProtocolError as e:
            if data[:2] == b"\x00\x05":
                return SILENT          # an ERROR is never answered, even a broken one
            return Refuse(codec.E_ILLEGAL, f"illegal operation: {e}", malformed=str(e))
        t = type(pkt)
        if t is codec.Error:
            return SILENT
        if t is not codec.Request:     # DATA/ACK/OACK to the listening port: no transfer's
            return Refuse(codec.E_UNKNOWN_TID, "unknown transfer ID")
        if pkt.opcode == codec.WRQ:
            return Refuse(codec.E_ACCESS, "read-only server", pkt)
        key = (peer, data)
        if key in transfers:
            return DUPLICATE
        if pkt.mode not in MODES:
            return Refuse(codec.E_ILLEGAL, f"unsupported mode {pkt.mode!r}", pkt)
        if self.per_client[peer[0]] >= self.max_per_client:
            return Refuse(codec.E_UNDEFINED, "too many transfers from this client", pkt)
        if len(transfers) >= self.max_transfers:
            self.refused_busy += 1
            return BUSY
        return Admit(key, pkt)

    def view(self, request: codec.Request, file, policy):
        """What the transfer reads once the file is open: the file, its netascii view, or a
        Refuse (the caller then closes the file)."""
        if request.mode != "netascii":
            return file
        if file.size > NETASCII_MAX_SIZE:
            return Refuse(codec.E_UNDEFINED, "file too large for netascii mode, use octet", request)
        return NetasciiFile(file, lookback=policy.max_windowsize * policy.max_blksize)

    def begin(self, host: str) -> None:
        self.per_client.begin(host)

    def end(self, host: str) -> None:
        self.per_client.end(host)
