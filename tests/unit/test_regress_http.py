"""Regressions found by fuzz_http (services/http_range.py, services/http_util.py)."""

from types import SimpleNamespace

from services.http.range import decide, parse_range
from services.http.util import send_error


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
