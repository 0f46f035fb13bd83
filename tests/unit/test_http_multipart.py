"""services.http.transfer.SegmentedFile: a multipart body read in arbitrary chunks is exactly
the layout's bytes (what the copy path sends for a multi-range answer)."""
from hypothesis import given, strategies as st

from services.http.range import multipart_layout
from services.http.transfer import SegmentedFile


class Bytes:
    def __init__(self, data: bytes):
        self.data, self.closed = data, False

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def close(self) -> None:
        self.closed = True


DATA = bytes(range(256)) * 64


@given(parts=st.lists(st.tuples(st.integers(0, len(DATA) - 1), st.integers(0, 500)), min_size=2, max_size=8),
       chunks=st.lists(st.integers(1, 3000), min_size=1, max_size=50))
def test_any_chunking_reads_the_whole_body(parts, chunks):
    spans = sorted({(a, min(a + n, len(DATA) - 1)) for a, n in parts})
    segments, total = multipart_layout(spans, len(DATA), "application/octet-stream", "b")
    expected = b"".join(s if isinstance(s, bytes) else DATA[s[0]:s[0] + s[1]] for s in segments)
    source = Bytes(DATA)
    body = SegmentedFile(source, segments, total)
    got, offset, i = [], 0, 0
    while offset < total:
        piece = body.read(offset, chunks[i % len(chunks)])
        assert piece
        got.append(piece)
        offset += len(piece)
        i += 1
    assert b"".join(got) == expected and len(expected) == total
    assert body.read(total, 100) == b"" and body.fileno() is None
    body.close()
    assert source.closed
