"""Log lines as a sysadmin reads them, and JSON for machines."""

import io
import json
import logging

from twisted.logger import LogLevel, Logger, globalLogPublisher

from bootserverd.ops.logsetup import _StdlibBridge, format_json, format_text, make_observer
from twisted.logger import LogLevel
from bootserverd.ops.logsetup import make_observer


def event(namespace="bootserverd.tftp", level=LogLevel.info, **fields):
    return {"log_namespace": namespace, "log_level": level, "log_time": 0.0,
            "log_format": "sent {file} to {client}", **fields}


def test_text_line_is_level_system_message():
    line = format_text(event(file="pxelinux.0", client="10.0.0.57"), with_time=False)
    assert line == "info tftp: sent pxelinux.0 to 10.0.0.57\n"
    assert format_text(event("services.nbd", LogLevel.warn, file="a", client="b"), False) == \
        "warning nbd: sent a to b\n"
    stamped = format_text(event(file="a", client="b"), with_time=True)
    assert stamped.endswith(" info tftp: sent a to b\n") and stamped[:4].isdigit()


def test_json_line_carries_fields():
    record = json.loads(format_json(event(file="pxelinux.0", client="10.0.0.57", bytes=46_000)))
    assert record["message"] == "sent pxelinux.0 to 10.0.0.57"
    assert record["system"] == "tftp" and record["level"] == "info"
    assert record["bytes"] == 46_000 and record["file"] == "pxelinux.0"


def test_observer_writes_one_line_per_event():
    out = io.StringIO()
    observe = make_observer("text", out, with_time=False)
    observe(event(file="a", client="b"))
    observe(event(file="c", client="d"))
    assert out.getvalue().count("\n") == 2


def test_stdlib_logging_is_bridged():
    seen = []
    globalLogPublisher.addObserver(seen.append)
    try:
        record = logging.LogRecord("scapy.runtime", logging.WARNING, __file__, 1, "no route %s", ("x",), None)
        _StdlibBridge().emit(record)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    [bridged] = [e for e in seen if e.get("log_namespace") == "scapy.runtime"]
    assert bridged["log_level"] == LogLevel.warn and bridged["message"] == "no route x"
    assert Logger  # the bridge goes through twisted.logger, not around it


def test_factory_start_stop_chatter_is_dropped_below_warning():
    from twisted.logger import PredicateResult

    from bootserverd.ops.logsetup import _quiet_twisted
    chatter = {"log_namespace": "services.http.service._Site", "log_level": LogLevel.info,
               "log_format": "Starting factory {factory!r}"}
    assert _quiet_twisted(chatter) == PredicateResult.no
    assert _quiet_twisted(event(file="a", client="b")) == PredicateResult.maybe


# -- regression (fuzz_http): a log line quoting a client's undecodable bytes (surrogates) could
# not be written to a strict UTF-8 stream (the observer silently dropped the whole line) and
# went out as invalid UTF-8 on a surrogateescape one (the C locale's stdout; found by
# tests/reliability/test_fuzz_replay.py). Fixed in bootserverd/logsetup.py: escaped, kept.

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
