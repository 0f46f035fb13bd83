"""TFTP: any datagram through the codec, and a read session driven by a fuzzed sequence of
packets and timer events (tftp.codec, tftp.session).

Invariants: decode raises only ProtocolError; a decoded packet re-encodes to bytes that
decode to the same packet; the session never raises, never sends a block outside
[1, nblocks] nor beyond acked + windowsize, and only ever finishes once.
"""

from __future__ import annotations

from tests.fuzz import harness
from tests.fuzz.harness import Fdp

with harness.instrumented("tftp"):
    from tftp import codec
    from tftp.session import Finish, Policy, ReadSession, SendBlocks, SendPacket, SetTimer

POLICIES = (Policy(), Policy(max_blksize=65464, max_windowsize=16, timeout=0.5, retries=2),
            Policy(max_blksize=512, max_windowsize=1, retries=1))


def _packet(data: bytes):
    try:
        packet = codec.decode(data)
    except codec.ProtocolError:
        return None
    again = codec.encode(packet)
    if isinstance(packet, codec.Error):
        # Only the first string is kept and undecodable bytes become U+FFFD: compare decoded.
        assert codec.decode(again) == packet or "\ufffd" in packet.message, packet
    else:
        assert codec.decode(again) == packet, (data, again, packet)
    return packet


def _session(fdp: Fdp, request: codec.Request) -> None:
    size = fdp.int(3) * fdp.pick((1, 1, 7, 512))
    session = ReadSession(request, size, fdp.pick(POLICIES))
    now = 0.0
    finished = 0
    actions = list(session.start(now))
    for _ in range(200):
        for action in actions:
            if isinstance(action, SendBlocks):
                assert 1 <= action.first <= action.last <= session.nblocks, (action, session.nblocks)
                assert action.last <= session.acked + session.windowsize, action
            elif isinstance(action, Finish):
                finished += 1
            else:
                assert isinstance(action, (SendPacket, SetTimer)), action
        assert finished <= 1
        if session.done or not fdp.remaining():
            break
        now += fdp.byte() / 16.0
        kind = fdp.byte() % 8
        if kind < 5:                                        # an ACK near the window
            block = (session.acked + fdp.byte() - 8) & 0xFFFF
            actions = list(session.on_ack(block, now))
        elif kind == 5:
            actions = list(session.on_timeout(now))
        else:                                               # any datagram from the peer
            packet = _packet(fdp.bytes(64))
            actions = list(session.on_packet(packet, now)) if packet is not None else []


def one_input(data: bytes) -> None:
    if not data:
        return
    fdp = Fdp(data)
    mode = fdp.byte()
    if mode & 1:
        packet = _packet(fdp.rest())
        return
    packet = _packet(fdp.bytes(255))
    if isinstance(packet, codec.Request) and packet.opcode == codec.RRQ:
        _session(fdp, packet)
