"""TFTP codec: exact bytes, malformed input, and tftpy as an independent oracle."""
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from tftpy.TftpPacketFactory import TftpPacketFactory
from tftpy import TftpPacketTypes as T

from tftp import codec
from tftp.codec import Ack, Data, Error, OAck, ProtocolError, Request

REPO = Path(__file__).resolve().parents[2]


def test_rrq_exact_bytes_and_normalisation():
    raw = b"\x00\x01pxelinux.0\x00OcTeT\x00BLKSIZE\x001468\x00tsize\x000\x00"
    p = codec.decode(raw)
    assert p == Request(codec.RRQ, "pxelinux.0", "octet", (("blksize", "1468"), ("tsize", "0")))
    assert codec.encode(Request(codec.RRQ, "pxelinux.0", "OcTeT",
                                (("BLKSIZE", "1468"), ("tsize", "0")))) == raw


def test_other_packets_exact_bytes():
    assert codec.encode(Data(1, b"abc")) == b"\x00\x03\x00\x01abc"
    assert codec.encode_data(65536 + 7, b"x") == b"\x00\x03\x00\x07x"   # wraps on the wire
    assert codec.encode(Ack(65535)) == b"\x00\x04\xff\xff"
    assert codec.encode(Error(2, "no")) == b"\x00\x05\x00\x02no\x00"
    assert codec.encode(OAck((("blksize", "1468"),))) == b"\x00\x06blksize\x001468\x00"
    assert codec.decode(b"\x00\x03\x00\x02") == Data(2, b"")
    assert codec.decode(b"\x00\x04\x12\x34") == Ack(0x1234)
    assert codec.decode(b"\x00\x05\x00\x01gone\x00") == Error(1, "gone")
    assert codec.decode(b"\x00\x06tsize\x0010\x00") == OAck((("tsize", "10"),))


def test_ack_fast_path():
    assert codec.ack_block(b"\x00\x04\x00\x09") == 9
    assert codec.ack_block(b"\x00\x03\x00\x09") is None
    assert codec.ack_block(b"\x00\x04\x00\x09x") is None


def test_non_utf8_filename_is_kept_losslessly():
    p = codec.decode(b"\x00\x01a\xffb\x00octet\x00")
    assert p.filename == "a\udcffb"
    assert codec.encode(p) == b"\x00\x01a\xffb\x00octet\x00"
    # ...and an error message quoting it still encodes
    assert codec.encode_error(1, f"{p.filename} not found") == b"\x00\x05\x00\x01a?b not found\x00"


@pytest.mark.parametrize("raw", [
    b"", b"\x00", b"\x00\x01", b"\x00\x01abc",                       # short / no terminator
    b"\x00\x01file\x00", b"\x00\x01\x00octet\x00",                  # no mode / empty name
    b"\x00\x01f\x00octet\x00blksize\x00",                           # option without value
    b"\x00\x01f\x00oct\xe9t\x00", b"\x00\x01f\x00octet\x00\xff\x001\x00",  # non-ASCII
    b"\x00\x01f\x00octet\x00\x00x\x00",                             # empty option name
    b"\x00\x04\x00\x01\x00", b"\x00\x09\x00\x01", b"\xff\xff\x00\x00",  # bad ACK / opcode
    b"\x00\x05\x00\x01no-nul", b"\x00\x06tsize\x00",
])
def test_malformed_raises_protocol_error(raw):
    with pytest.raises(ProtocolError):
        codec.decode(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_decode_never_raises_anything_else(raw):
    try:
        codec.decode(raw)
    except ProtocolError:
        pass


_name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_val = st.integers(0, 10**9).map(str)
_opts = st.dictionaries(st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12), _val,
                        max_size=5)


@settings(max_examples=150, deadline=None)
@given(_name, _opts)
def test_rrq_oracle_both_ways(filename, options):
    ours = codec.encode(Request(codec.RRQ, filename, "octet", tuple(options.items())))
    theirs = TftpPacketFactory().parse(ours)
    assert isinstance(theirs, T.TftpPacketRRQ)
    name = theirs.filename
    assert (name.decode() if isinstance(name, bytes) else name) == filename
    assert theirs.options == options
    pkt = T.TftpPacketRRQ()
    pkt.filename, pkt.mode, pkt.options = filename, "octet", options
    back = codec.decode(pkt.encode().buffer)
    assert back == Request(codec.RRQ, filename, "octet", tuple(options.items()))


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 65535), st.binary(max_size=1468))
def test_data_ack_oracle_both_ways(block, payload):
    t = TftpPacketFactory().parse(codec.encode_data(block, payload))
    assert (t.blocknumber, t.data) == (block, payload)
    d = T.TftpPacketDAT()
    d.blocknumber, d.data = block, payload
    assert codec.decode(d.encode().buffer) == Data(block, payload)
    a = T.TftpPacketACK()
    a.blocknumber = block
    assert codec.decode(a.encode().buffer) == Ack(block)
    assert TftpPacketFactory().parse(codec.encode(Ack(block))).blocknumber == block


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8))
def test_error_oracle_both_ways(code):
    t = TftpPacketFactory().parse(codec.encode(Error(code, "boom")))
    assert t.errorcode == code
    e = T.TftpPacketERR()
    e.errorcode = code
    dec = codec.decode(e.encode().buffer)
    assert isinstance(dec, Error) and dec.code == code


@settings(max_examples=100, deadline=None)
@given(_opts.filter(bool))
def test_oack_oracle_both_ways(options):
    t = TftpPacketFactory().parse(codec.encode(OAck(tuple(options.items()))))
    assert t.options == options
    o = T.TftpPacketOACK()
    o.options = options
    assert dict(codec.decode(o.encode().buffer).options) == options

