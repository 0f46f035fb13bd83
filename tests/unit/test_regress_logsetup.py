"""Regression (fuzz_http): a log line quoting a client's undecodable bytes (surrogates) could
not be written to a strict UTF-8 stream (the observer silently dropped the whole line) and
went out as invalid UTF-8 on a surrogateescape one (the C locale's stdout; found by
tests/reliability/test_fuzz_replay.py). Fixed in bootserverd/logsetup.py: escaped, kept."""

import io

from twisted.logger import LogLevel

from bootserverd.ops.logsetup import make_observer


def test_line_with_surrogates_is_escaped_not_lost():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", write_through=True)
    observe = make_observer("text", stream, with_time=False)
    observe({"log_namespace": "bootserverd.http", "log_level": LogLevel.info, "log_time": 0.0,
             "log_format": "HTTP {path} 404", "path": "/tftp/\udcff\udcfe"})
    assert raw.getvalue() == b"info http: HTTP /tftp/\\udcff\\udcfe 404\n"


def test_surrogateescape_stream_gets_valid_utf8():
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", write_through=True)
    make_observer("json", stream, with_time=False)(
        {"log_namespace": "bootserverd.tftp", "log_level": LogLevel.info, "log_time": 0.0,
         "log_format": "RRQ {f} é", "f": "\udc9b"})
    raw.getvalue().decode("utf-8")          # strict: raises if the line is not UTF-8
    assert b"\\udc9b" in raw.getvalue()          # escaped, not dropped
