"""NBD: a client byte stream, cut into fuzzed chunks, through the fixed-newstyle handshake
and then the transmission phase (nbd.codec, nbd.handshake, nbd.transmission).

Invariants: the handshake never raises and ends at most once (Close or Transmit); option
replies are well-formed; in transmission the parser raises only ProtocolError and every
READ it lets through lies inside the export and within the advertised maximum; writes are
always refused (read-only export).
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.fuzz import harness
from tests.fuzz.harness import Fdp

with harness.instrumented("nbd"):
    from nbd import codec as c
    from nbd.handshake import MAX_REQUEST, Close, Handshake, Send, Transmit
    from nbd.transmission import CACHE, DISC, READ, REPLY, RequestParser, Transmission


@dataclass(frozen=True)
class Export:
    name: str
    size: int
    description: str = "test export"


class Catalog:
    EXPORTS = {"alpha": Export("alpha", 8 << 20), "": Export("", 4096), "empty": Export("empty", 0)}

    def names(self):
        return list(self.EXPORTS)

    def lookup(self, name):
        return self.EXPORTS.get(name)

    open = lookup


def _check_send(data: bytes) -> None:
    if len(data) >= c.OPTION_REPLY_HEADER.size and data[:8] == c.OPTION_REPLY_MAGIC.to_bytes(8, "big"):
        _, _, _, length = c.OPTION_REPLY_HEADER.unpack_from(data)
        assert len(data) == c.OPTION_REPLY_HEADER.size + length


def _chunks(fdp: Fdp, stream: bytes):
    pos = 0
    while pos < len(stream):
        n = 1 + fdp.byte() * 4 if fdp.remaining() else len(stream)
        yield stream[pos:pos + n]
        pos += n


def _transmit(fdp: Fdp, t: Transmit, stream: bytes) -> None:
    tx = Transmission(t.export.size, t.structured, t.contexts)
    parser = RequestParser()
    for chunk in _chunks(fdp, t.leftover + stream):
        try:
            requests = parser.feed(chunk)
        except c.ProtocolError:
            return
        for flags, cmd, handle, offset, length in requests:
            action = tx.handle(flags, cmd, handle, offset, length)
            kind = action[0]
            if kind == READ:
                _, header, off, n = action
                assert cmd == c.CMD_READ and 0 < n <= MAX_REQUEST and off + n <= t.export.size
            elif kind == REPLY:
                assert isinstance(action[1], bytes)
                if cmd in (c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES):
                    assert action[1] in (c.simple_reply(handle, c.EPERM),) or \
                        c.EPERM.to_bytes(4, "big") in action[1]
            elif kind == CACHE:
                assert 0 < action[2] and action[1] + action[2] <= t.export.size
            else:
                assert kind == DISC


def one_input(data: bytes) -> None:
    fdp = Fdp(data)
    split = fdp.int(2)
    stream = fdp.rest()
    hs_bytes, tx_bytes = stream[:split], stream[split:]
    cut = Fdp(bytes(reversed(data)))               # chunk sizes from the same input
    hs = Handshake(Catalog())
    for action in hs.start():
        assert isinstance(action, Send)
    ended = 0
    for chunk in _chunks(cut, hs_bytes):
        for action in hs.feed(chunk):
            if isinstance(action, Send):
                _check_send(action.data)
            elif isinstance(action, Close):
                ended += 1
            else:
                assert isinstance(action, Transmit)
                ended += 1
                assert action.export.name in Catalog.EXPORTS
                _transmit(cut, action, tx_bytes)
        assert ended <= 1
        if hs.done:
            break
