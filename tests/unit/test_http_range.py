"""services.http.range: Range / If-Range / If-None-Match decisions, pure."""
from pathlib import Path

from hypothesis import given, strategies as st

from services.http.range import MAX_RANGES, decide, multipart_layout, parse_range, parse_ranges
from types import SimpleNamespace
from services.http.range import decide, parse_range
from services.http.util import send_error

ETAG = '"abc"'
REPO = Path(__file__).resolve().parents[2]


def test_forms():
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=990-2000", 1000) == (990, 999)
    assert parse_range(" BYTES = 1 - 2 ", 1000) == (1, 2)        # lenient about case and blanks
    assert parse_range("bytes= 1-2", 1000) == (1, 2)


def test_unsatisfiable_and_ignored():
    assert parse_range("bytes=1000-", 1000) == "unsatisfiable"
    assert parse_range("bytes=-0", 1000) == "unsatisfiable"
    assert parse_range("bytes=0-", 0) == "unsatisfiable"
    for ignored in ("bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=", "bytes=a-b", "0-1", "bytes=-"):
        assert parse_range(ignored, 1000) is None, ignored


def test_decisions():
    assert decide("GET", 1000, ETAG) == decide("GET", 1000, ETAG, None)
    d = decide("GET", 1000, ETAG, "bytes=10-19")
    assert (d.status, d.start, d.length, d.content_range) == (206, 10, 10, "bytes 10-19/1000")
    assert d.end == 19
    d = decide("GET", 1000, ETAG, "bytes=2000-")
    assert (d.status, d.length, d.content_range) == (416, 0, "bytes */1000")
    d = decide("GET", 1000, ETAG, "bytes=0-0,5-9")
    assert (d.status, d.multipart, d.parts) == (206, True, ((0, 0), (5, 9)))


def test_if_range():
    assert decide("GET", 1000, ETAG, "bytes=10-", if_range=ETAG).status == 206
    assert decide("GET", 1000, ETAG, "bytes=10-", if_range='"other"').status == 200
    assert decide("GET", 1000, ETAG, "bytes=10-", if_range='W/"abc"').status == 200   # weak never matches
    assert decide("GET", 1000, None, "bytes=10-", if_range=ETAG).status == 200
    assert decide("GET", 1000, ETAG, "bytes=10-", if_range="Sat, 01 Jan 2000 00:00:00 GMT").status == 200


def test_if_none_match():
    assert decide("GET", 1000, ETAG, if_none_match=ETAG).status == 304
    assert decide("HEAD", 1000, ETAG, if_none_match='"x", W/"abc"').status == 304
    assert decide("GET", 1000, ETAG, if_none_match="*").status == 304
    assert decide("GET", 1000, ETAG, if_none_match='"x"').status == 200


@given(size=st.integers(0, 10**12), a=st.integers(0, 10**12), b=st.integers(0, 10**12))
def test_ranges_stay_inside_the_file(size, a, b):
    for header in (f"bytes={a}-{b}", f"bytes={a}-", f"bytes=-{b}"):
        d = decide("GET", size, ETAG, header)
        assert d.status in (200, 206, 416)
        if d.status == 206:
            assert 0 <= d.start <= d.end < size
            assert d.content_range == f"bytes {d.start}-{d.end}/{size}"
        if d.status == 200:
            assert (d.start, d.length) == (0, size)


def test_several_ranges_merged_sorted_and_capped():
    assert parse_ranges("bytes=0-1,5-6", 1000) == [(0, 1), (5, 6)]
    assert parse_ranges("bytes=500-599,0-99,50-149,150-160", 1000) == [(0, 160), (500, 599)]
    assert parse_ranges("bytes=0-9,10-19", 1000) == [(0, 19)]               # touching: one part
    assert parse_ranges("bytes=0-9,2000-3000", 1000) == [(0, 9)]             # unsatisfiable part dropped
    assert parse_ranges("bytes=2000-,3000-", 1000) == "unsatisfiable"
    assert parse_ranges("bytes=0-9,x", 1000) is None                          # one invalid spec: ignore all
    many = ",".join(f"{i * 10}-{i * 10 + 1}" for i in range(MAX_RANGES + 1))
    assert parse_ranges(f"bytes={many}", 10**6) is None                       # too many: whole file
    assert decide("GET", 10**6, ETAG, f"bytes={many}").status == 200
    d = decide("GET", 1000, ETAG, "bytes=0-9,-10")
    assert d.parts == ((0, 9), (990, 999)) and d.multipart


def _body(segments, data: bytes) -> bytes:
    return b"".join(s if isinstance(s, bytes) else data[s[0]:s[0] + s[1]] for s in segments)


def test_multipart_body_parses_with_the_stdlib_email_parser():
    import email.parser
    data = bytes(range(256)) * 40
    parts = [(0, 9), (100, 355), (10000, 10239)]
    segments, total = multipart_layout(parts, len(data), "application/octet-stream", "B0UNDARY")
    body = _body(segments, data)
    assert len(body) == total
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: multipart/byteranges; boundary=B0UNDARY\r\n\r\n" + body)
    got = [(part["Content-Range"], part.get_payload(decode=True)) for part in message.get_payload()]
    assert got == [(f"bytes {a}-{b}/{len(data)}", data[a:b + 1]) for a, b in parts]


@given(size=st.integers(1, 5000), specs=st.lists(st.tuples(st.integers(0, 6000), st.integers(0, 6000)),
                                                  min_size=1, max_size=10))
def test_merged_ranges_cover_exactly_what_was_asked(size, specs):
    header = "bytes=" + ",".join(f"{min(a, b)}-{max(a, b)}" for a, b in specs)
    got = parse_ranges(header, size)
    asked = {i for a, b in specs for i in range(min(a, b), min(max(a, b), size - 1) + 1)}
    if got == "unsatisfiable":
        assert not asked
        return
    covered = [i for a, b in got for i in range(a, b + 1)]
    assert set(covered) == asked and len(covered) == len(asked)              # no byte twice
    assert all(got[i][1] + 1 < got[i + 1][0] for i in range(len(got) - 1))  # sorted, apart


# -- regressions found by fuzz_http (services/http_range.py, services/http_util.py).

def test_range_with_thousands_of_digits_is_not_a_500():
    # int() refuses strings over 4300 digits (ValueError → 500 + traceback); Twisted accepts
    # header lines up to 16 KiB. A huge last-byte-pos is clipped like any other.
    huge = "9" * 5000
    assert parse_range(f"bytes=0-{huge}", 1000) == (0, 999)
    assert parse_range(f"bytes={huge}-", 1000) == "unsatisfiable"
    assert parse_range(f"bytes=-{huge}", 1000) == (0, 999)
    assert parse_range("bytes=" + "0" * 5000 + "5-9", 1000) == (5, 9)
    assert decide("GET", 1000, None, f"bytes=10-{huge}").content_range == "bytes 10-999/1000"


class FakeRequest:
    method = b"GET"
    uri = b"/tftp/%ff"

    def __init__(self):
        self.headers = {}

    def setResponseCode(self, code):
        self.code = code

    def setHeader(self, name, value):
        self.headers[name] = value

    def getClientAddress(self):
        return SimpleNamespace(host="10.0.0.5")


def test_error_reason_quoting_undecodable_bytes_is_sent():
    # A path that is not UTF-8 reaches the reason as surrogates; encoding it raised.
    body = send_error(FakeRequest(), 404, "sub/\udcff\udcfe not found")
    assert body == b"404 sub/?? not found\n"
