"""Netascii (tftp.netascii): the byte rule, and the streaming view a transfer reads."""
from hypothesis import given, strategies as st

from tftp import netascii
from tftp.netascii import NetasciiFile


class Bytes:
    """A file as the adapter's open_file returns it: size, read(offset, length), close."""

    def __init__(self, data: bytes) -> None:
        self.data, self.size, self.reads, self.closed = data, len(data), 0, False

    def read(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self.data[offset:offset + length]

    def close(self) -> None:
        self.closed = True


@given(st.binary(max_size=200), st.integers(0, 200))
def test_netascii_is_bytewise_so_chunks_compose(data, cut):
    whole = netascii.encode(data)
    assert netascii.encode(data[:cut]) + netascii.encode(data[cut:]) == whole
    assert len(whole) == len(data) + data.count(b"\r") + data.count(b"\n")
    assert netascii.encode(b"a\nb\rc\r\n") == b"a\r\nb\r\0c\r\0\r\n"


def test_view_has_the_converted_size_and_reads_forward_in_windows():
    data = b"line\n" * 30000 + b"cr\r"                      # > one CHUNK of input
    want = netascii.encode(data)
    view = NetasciiFile(Bytes(data), lookback=1024)
    assert view.size == len(want)
    got = b"".join(view.read(off, 700) for off in range(0, view.size, 700))
    assert got == want


def test_view_looks_back_one_window_and_rewinds_beyond_it():
    data = bytes(range(256)) * 800
    want = netascii.encode(data)
    f = Bytes(data)
    view = NetasciiFile(f, lookback=4096)
    view.read(100_000, 512)
    reads = f.reads
    assert view.read(100_000 - 4096, 512) == want[100_000 - 4096:100_000 - 3584]   # kept
    assert f.reads == reads
    assert view.read(10, 512) == want[10:522]                # further back: read again, still right
    assert f.reads > reads


@given(st.binary(max_size=3000), st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 600)), max_size=20))
def test_any_read_pattern_matches_the_whole_conversion(data, reads):
    want = netascii.encode(data)
    view = NetasciiFile(Bytes(data), lookback=256)
    for offset, length in reads:
        assert view.read(offset, length) == want[offset:offset + length]


def test_close_closes_the_file():
    f = Bytes(b"x")
    NetasciiFile(f, 512).close()
    assert f.closed
