"""services.http_range: Range / If-Range / If-None-Match decisions, pure."""
import subprocess
import sys
from pathlib import Path

from hypothesis import given, strategies as st

from services.http_range import decide, parse_range

ETAG = '"abc"'
REPO = Path(__file__).resolve().parents[2]


def test_pure_module_imports_without_twisted():
    code = "import sys; sys.modules['twisted'] = None; import services.http_range"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


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
    assert decide("GET", 1000, ETAG, "bytes=0-0,5-9").status == 200


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
