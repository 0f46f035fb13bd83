"""Transmission: request parsing and the reply decided for every command."""

import struct
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nbd import codec as c  # noqa: E402
from nbd.transmission import CACHE, DISC, READ, REPLY, RequestParser, SessionRecord, Transmission  # noqa: E402

SIZE = 10 * 1024 * 1024
MAX = 32 * 1024 * 1024


def simple(handle, err=0):
    return (REPLY, c.simple_reply(handle, err))


def err_chunk_errno(action):
    assert action[0] == REPLY
    magic, flags, typ, handle, n = c.CHUNK_HEADER.unpack_from(action[1])
    assert magic == c.STRUCTURED_REPLY_MAGIC and typ == c.REPLY_TYPE_ERROR and flags == 1
    return struct.unpack_from(">I", action[1], 20)[0]


def test_parser_bad_magic_is_protocol_error():
    with pytest.raises(c.ProtocolError):
        RequestParser().feed(b"\x00" * 28)


def test_parser_discards_write_payload_across_feeds():
    p = RequestParser()
    w = c.request(c.CMD_WRITE, 1, 0, 1000)
    got = p.feed(w + bytes(400))
    assert got == [(0, c.CMD_WRITE, 1, 0, 1000)]
    got = p.feed(bytes(600) + c.request(c.CMD_READ, 2, 0, 512))
    assert got == [(0, c.CMD_READ, 2, 0, 512)]


def test_parser_stops_after_disc():
    p = RequestParser()
    got = p.feed(c.request(c.CMD_DISC, 9) + c.request(c.CMD_READ, 2, 0, 512))
    assert got == [(0, c.CMD_DISC, 9, 0, 0)] and p.stopped
    assert p.feed(c.request(c.CMD_READ, 3, 0, 512)) == []


reqs = st.lists(st.tuples(st.sampled_from([c.CMD_READ, c.CMD_WRITE, c.CMD_FLUSH, c.CMD_CACHE]),
                          st.integers(0, 2**64 - 1), st.integers(0, 2**40),
                          st.integers(0, 3000), st.integers(0, 7)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(reqs, st.lists(st.integers(1, 97), min_size=1, max_size=10))
def test_parser_any_split_gives_the_same_requests(requests, cuts):
    stream = b""
    for cmd, handle, off, length, flags in requests:
        stream += c.request(cmd, handle, off, length, flags)
        if cmd == c.CMD_WRITE:
            stream += b"\xaa" * length
    p = RequestParser()
    got, pos, i = [], 0, 0
    while pos < len(stream):
        n = cuts[i % len(cuts)]
        got += p.feed(stream[pos:pos + n])
        pos += n
        i += 1
    assert got == [(f, cmd, h, o, n) for cmd, h, o, n, f in requests]


def test_read_simple_and_structured():
    t = Transmission(SIZE, False, {})
    assert t.handle(0, c.CMD_READ, 5, 4096, 512) == (READ, c.simple_reply(5), 4096, 512)
    t = Transmission(SIZE, True, {})
    assert t.handle(c.CMD_FLAG_DF, c.CMD_READ, 5, 0, 512) == (
        READ, c.data_chunk_header(5, 0, 512), 0, 512)


def test_read_bounds():
    t = Transmission(SIZE, False, {})
    assert t.handle(0, c.CMD_READ, 1, SIZE - 1, 1)[0] == READ          # last byte
    assert t.handle(0, c.CMD_READ, 1, SIZE - 1, 2) == simple(1, c.EINVAL)  # past the end
    assert t.handle(0, c.CMD_READ, 1, SIZE, 1) == simple(1, c.EINVAL)
    assert t.handle(0, c.CMD_READ, 1, 0, 0) == simple(1, c.EINVAL)
    big = Transmission(1 << 40, False, {})
    assert big.handle(0, c.CMD_READ, 1, 0, MAX)[0] == READ
    assert big.handle(0, c.CMD_READ, 1, 0, MAX + 1) == simple(1, c.EINVAL)


def test_read_errors_are_structured_when_negotiated():
    t = Transmission(SIZE, True, {})
    assert err_chunk_errno(t.handle(0, c.CMD_READ, 1, SIZE, 1)) == c.EINVAL


def test_read_bad_flags():
    t = Transmission(SIZE, False, {})
    assert t.handle(c.CMD_FLAG_DF, c.CMD_READ, 1, 0, 1) == simple(1, c.EINVAL)  # DF not offered
    assert t.handle(0x80, c.CMD_READ, 1, 0, 1) == simple(1, c.EINVAL)
    assert t.handle(c.CMD_FLAG_FUA, c.CMD_READ, 1, 0, 1)[0] == READ


@pytest.mark.parametrize("cmd", [c.CMD_WRITE, c.CMD_TRIM, c.CMD_WRITE_ZEROES])
def test_writes_are_eperm(cmd):
    assert Transmission(SIZE, False, {}).handle(0, cmd, 3, 0, 512) == simple(3, c.EPERM)
    assert err_chunk_errno(Transmission(SIZE, True, {}).handle(0, cmd, 3, 0, 512)) == c.EPERM


def test_flush_succeeds():
    assert Transmission(SIZE, False, {}).handle(0, c.CMD_FLUSH, 4, 0, 0) == simple(4)
    assert Transmission(SIZE, True, {}).handle(0, c.CMD_FLUSH, 4, 0, 0) == (
        REPLY, c.none_chunk(4))


def test_cache_is_a_hint_with_bounds():
    t = Transmission(SIZE, False, {})
    assert t.handle(0, c.CMD_CACHE, 4, 0, 8192) == (CACHE, 0, 8192, c.simple_reply(4))
    assert t.handle(0, c.CMD_CACHE, 4, SIZE, 1) == simple(4, c.EINVAL)


def test_disc_and_unknown_command():
    t = Transmission(SIZE, False, {})
    assert t.handle(0, c.CMD_DISC, 0, 0, 0) == (DISC,)
    assert t.handle(0, 42, 6, 0, 0) == simple(6, c.EINVAL)


def test_block_status():
    t = Transmission(SIZE, True, {1: "base:allocation"})
    assert t.handle(c.CMD_FLAG_REQ_ONE, c.CMD_BLOCK_STATUS, 8, 0, 4096) == (
        REPLY, c.block_status_chunk(8, 1, ((4096, 0),)))
    assert t.handle(0, c.CMD_BLOCK_STATUS, 8, 0, SIZE)[0] == REPLY   # no max for status
    assert err_chunk_errno(t.handle(0, c.CMD_BLOCK_STATUS, 8, SIZE, 1)) == c.EINVAL
    none = Transmission(SIZE, True, {})
    assert err_chunk_errno(none.handle(0, c.CMD_BLOCK_STATUS, 8, 0, 1)) == c.EINVAL


def test_session_outcome():
    assert SessionRecord.outcome_of(attached=False, ended_by_client=True) == "no_export"
    assert SessionRecord.outcome_of(attached=True, ended_by_client=True) == "done"
    assert SessionRecord.outcome_of(attached=True, ended_by_client=False) == "aborted"


def test_session_summary_is_the_log_line():
    served = SessionRecord("10.0.0.5:999", "img", 3_000_000, 12, 2.0, "client sent NBD_CMD_DISC")
    assert served.summary() == ("export 'img' disconnected: 3.0 MB in 12 requests, 2.0 s (1.5 MB/s), "
                                "client sent NBD_CMD_DISC")
    listed = SessionRecord("10.0.0.5:998", None, 0, 0, 0.3, "client aborted negotiation",
                           "no_export", ("LIST", "ABORT"))
    assert listed.summary() == ("left during negotiation after 0.3 s (options LIST,ABORT): "
                                "client aborted negotiation")
    assert "(options none)" in SessionRecord("h:1", None, 0, 0, 0.0, "timeout").summary()
