"""nbd.inflight: after a kill -9, the next process answers exactly what the dead one owed —
no reply lost, none sent twice, one cut short finished from the byte where it stopped."""

from __future__ import annotations

import random

from nbd import codec as c
from nbd import inflight
from nbd.transmission import DISC, READ, REPLY, RequestParser, Transmission

EXPORT = bytes(random.Random(1).randbytes(1 << 16))


def request(cmd: int, handle: int, offset: int = 0, length: int = 0) -> bytes:
    return c.REQUEST.pack(c.REQUEST_MAGIC, 0, cmd, handle, offset, length)


def read(handle: int, offset: int, length: int) -> bytes:
    return request(c.CMD_READ, handle, offset, length)


def reply_bytes(action: tuple) -> bytes:
    """What the sender puts on the wire for one action."""
    if action[0] == READ:
        return action[1] + EXPORT[action[2]:action[2] + action[3]]
    if action[0] == REPLY:
        return action[1]
    return b""


def test_a_log_reads_back_what_was_written_since_the_last_settle_point():
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=100, out_base=50)
    log.received(read(1, 0, 512))
    log.settle(0, 50 + 16 + 512)                    # answered: nothing to replay
    log.received(read(2, 512, 512) + read(3, 0, 4)[:10])
    state = inflight.read(buf)
    assert (state.in_base, state.in_end, state.out_base, state.valid) == (128, 128 + 38, 50 + 16 + 512, True)
    assert state.data == read(2, 512, 512) + read(3, 0, 4)[:10]
    log.settle(10, 50 + 16 + 512 + 16 + 512)        # the part of request 3 stays to be replayed
    assert inflight.read(buf).data == read(3, 0, 4)[:10]


def test_a_header_half_written_when_the_process_died_is_not_the_one_read():
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=0, out_base=0)
    log.received(read(1, 0, 512))
    before = inflight.read(buf)
    spare = inflight._SLOT_AT[buf[8] ^ 1]
    buf[spare:spare + 20] = b"\xff" * 20            # the kill landed inside the next header write
    assert inflight.read(buf) == before


def test_the_replay_drops_what_was_written_cuts_the_reply_in_progress_and_keeps_the_rest():
    tx = Transmission(len(EXPORT), False, {})
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=0, out_base=1000)
    log.received(read(1, 0, 4096) + read(2, 4096, 4096) + read(3, 8192, 4096) + read(4, 0, 8)[:5])
    written = 1000 + (16 + 4096) + 16 + 100          # reply 1 out, reply 2's header and 100 bytes of data
    replay = inflight.plan(inflight.read(buf), consumed=3 * 28 + 5, written=written, tx=tx)
    assert replay.actions == ((READ, b"", 4096 + 100, 4096 - 100), tx.handle(0, c.CMD_READ, 3, 8192, 4096))
    assert (replay.buffered, replay.skip) == (read(4, 0, 8)[:5], 0)


def test_bytes_logged_and_left_in_the_socket_are_read_again_not_replayed():
    tx = Transmission(len(EXPORT), False, {})
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=0, out_base=0)
    log.received(read(1, 0, 512) + read(2, 0, 512))   # peeked and logged; the kill came before the take
    replay = inflight.plan(inflight.read(buf), consumed=28, written=0, tx=tx)
    assert replay.actions == (tx.handle(0, c.CMD_READ, 1, 0, 512),) and replay.logged == read(1, 0, 512)


def test_a_request_read_but_not_logged_refuses_the_resume():
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=0, out_base=0)
    log.received(read(1, 0, 512))
    why = inflight.plan(inflight.read(buf), consumed=56, written=0, tx=Transmission(len(EXPORT), False, {}))
    assert why == "the stopped process read 28 bytes it had not logged"


def test_more_written_than_the_logged_replies_refuses_the_resume():
    buf = bytearray(inflight.SIZE)
    inflight.InflightLog(buf, in_base=0, out_base=0).received(read(1, 0, 512))
    why = inflight.plan(inflight.read(buf), consumed=28, written=16 + 512 + 1, tx=Transmission(len(EXPORT), False, {}))
    assert "1 bytes more were written" in why


def test_an_overflowing_log_refuses_until_the_next_settle_point():
    buf = bytearray(inflight.SIZE)
    log = inflight.InflightLog(buf, in_base=0, out_base=0)
    burst = read(1, 0, 8) * (inflight.CAPACITY // 28 + 1)
    log.received(burst)
    tx = Transmission(len(EXPORT), False, {})
    assert "more requests were waiting" in inflight.plan(inflight.read(buf), len(burst), 0, tx)
    log.settle(0, 10_000)
    log.received(read(2, 0, 8))
    replay = inflight.plan(inflight.read(buf), len(burst) + 28, 10_000, tx)
    assert [a[0] for a in replay.actions] == [READ]


def test_a_disc_is_replayed_only_if_every_reply_before_it_is_out():
    tx = Transmission(len(EXPORT), True, {})
    buf = bytearray(inflight.SIZE)
    inflight.InflightLog(buf, in_base=0, out_base=0).received(request(c.CMD_FLUSH, 1) + request(c.CMD_DISC, 2))
    flush = reply_bytes(tx.handle(0, c.CMD_FLUSH, 1, 0, 0))
    assert inflight.plan(inflight.read(buf), 56, 0, tx).actions == (tx.handle(0, c.CMD_FLUSH, 1, 0, 0), (DISC,))
    assert inflight.plan(inflight.read(buf), 56, len(flush), tx).actions == ((DISC,),)


class Server:
    """The protocol's bookkeeping over a socket that takes a random share of each write."""

    def __init__(self, rng: random.Random, structured: bool):
        self.rng = rng
        self.tx = Transmission(len(EXPORT), structured, {})
        self.parser = RequestParser()
        self.buf = bytearray(inflight.SIZE)
        self.log = inflight.InflightLog(self.buf, in_base=0, out_base=0)
        self.queue: list[bytes] = []        # replies not fully in the socket
        self.wire = bytearray()             # what reached the socket
        self.consumed = 0

    def step(self, data: bytes) -> None:
        self.consumed += len(data)
        self.log.received(data)
        self.queue += [reply_bytes(self.tx.handle(*r)) for r in self.parser.feed(data)]
        while self.queue and self.rng.random() < 0.7:    # the socket takes some of it
            head = self.queue[0]
            n = self.rng.randrange(1, len(head) + 1)
            self.wire += head[:n]
            self.queue[0] = head[n:]
            if not self.queue[0]:
                self.queue.pop(0)
        if not self.queue:
            self.log.settle(self.parser.partial(), len(self.wire))


def test_whatever_moment_the_process_dies_the_client_receives_each_reply_once_in_order():
    for seed in range(300):
        rng = random.Random(seed)
        structured = bool(seed % 2)
        stream = b"".join(read(h, rng.randrange(0, len(EXPORT) - 4096), rng.randrange(1, 4096))
                          if rng.random() < 0.9 else request(c.CMD_FLUSH, h) for h in range(1, 40))
        server = Server(rng, structured)
        cut = rng.randrange(0, len(stream))           # the process dies after reading this much
        at = 0
        while at < cut:
            n = min(rng.randrange(1, 100), cut - at)
            server.step(stream[at:at + n])
            at += n
        if rng.random() < 0.5:                        # ... or dies having logged more, not taken it
            server.log.received(stream[cut:cut + rng.randrange(1, 60)])
        replay = inflight.plan(inflight.read(server.buf), server.consumed, len(server.wire), server.tx)
        assert not isinstance(replay, str), (seed, replay)
        resumed = RequestParser()
        resumed.resume(replay.buffered, replay.skip)
        wire = server.wire + b"".join(reply_bytes(a) for a in replay.actions)
        wire += b"".join(reply_bytes(server.tx.handle(*r)) for r in resumed.feed(stream[cut:]))
        expected = b"".join(reply_bytes(server.tx.handle(*r)) for r in RequestParser().feed(stream))
        assert wire == expected, seed
