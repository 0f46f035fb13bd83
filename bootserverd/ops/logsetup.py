"""Logging for a sysadmin running ``journalctl -fu bootserverd``: one line per event.

Text lines are ``LEVEL SYSTEM: message`` (with a timestamp unless journald adds its own);
``log_format: json`` writes one JSON object per line for machines. Twisted's own chatter
("Starting factory", "UDP port opened") is kept below the warning level out, and stdlib
``logging`` of libraries is bridged in once. Every logger is named ``bootserverd.<system>``,
the system being what a sysadmin filters on: app, tftp, nbd, http, dhcp, directory, images,
diffs, boot, inventory.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import IO

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, Logger,
                            PredicateResult, formatEvent, globalLogBeginner, globalLogPublisher)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn, "error": LogLevel.error}
_NAMES = {LogLevel.debug: "debug", LogLevel.info: "info", LogLevel.warn: "warning",
          LogLevel.error: "error", LogLevel.critical: "critical"}


def system_of(event: dict) -> str:
    """'bootserverd.tftp' → 'tftp'; Twisted and stdlib namespaces keep their first part."""
    namespace = event.get("log_namespace") or "bootserverd"
    head, _, rest = namespace.partition(".")
    if head in ("bootserverd", "services"):
        return rest.split(".")[0] if rest else head
    return head


def format_text(event: dict, with_time: bool) -> str:
    text = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        text = f"{text}\n{failure.getTraceback()}" if text else failure.getTraceback()
    level = _NAMES.get(event.get("log_level"), "info")
    line = f"{level} {system_of(event)}: {text}"
    if with_time:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event.get("log_time", time.time())))
        line = f"{stamp} {line}"
    return line + "\n"


def format_json(event: dict) -> str:
    record = {"time": round(event.get("log_time", time.time()), 3),
              "level": _NAMES.get(event.get("log_level"), "info"),
              "system": system_of(event), "message": formatEvent(event)}
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and isinstance(value, (str, int, float, bool)):
            record[key] = value
    if event.get("log_failure") is not None:
        record["traceback"] = event["log_failure"].getTraceback()
    return json.dumps(record) + "\n"


def make_observer(fmt: str, stream: IO[str], with_time: bool):
    def observe(event: dict) -> None:
        try:
            line = format_json(event) if fmt == "json" else format_text(event, with_time)
            if not line.isascii():
                # A client's undecodable bytes arrive as surrogates: a strict stream refuses
                # the line, a surrogateescape one (C locale) writes invalid UTF-8. Escape them.
                line = line.encode("utf-8", "backslashreplace").decode("utf-8")
            stream.write(line)
            stream.flush()
        except Exception:  # a broken stdout must not take the reactor down
            pass
    return observe


def _quiet_twisted(event: dict):
    """Twisted's and libraries' info lines are not events a sysadmin cares about."""
    namespace = event.get("log_namespace") or ""
    if event.get("log_level", LogLevel.info) >= LogLevel.warn:
        return PredicateResult.maybe
    if namespace.startswith(("twisted.", "log_legacy", "scapy")) or namespace == "twisted":
        return PredicateResult.no
    if str(event.get("log_format", "")).startswith(("Starting factory", "Stopping factory")):
        return PredicateResult.no   # Factory.doStart/doStop log under the factory's own namespace
    return PredicateResult.maybe


class _StdlibBridge(logging.Handler):
    _levels = {logging.DEBUG: LogLevel.debug, logging.INFO: LogLevel.info,
               logging.WARNING: LogLevel.warn, logging.ERROR: LogLevel.error,
               logging.CRITICAL: LogLevel.critical}

    def emit(self, record: logging.LogRecord) -> None:
        level = self._levels.get(record.levelno, LogLevel.warn)
        Logger(namespace=record.name).emit(level, "{message}", message=record.getMessage())


def start_logging(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    stream = stream or sys.stdout
    with_time = not os.environ.get("JOURNAL_STREAM") and not os.environ.get("INVOCATION_ID")
    levels = LogLevelFilterPredicate(defaultLogLevel=LEVELS[level])
    observer = FilteringLogObserver(make_observer(fmt, stream, with_time), [levels, _quiet_twisted])
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False, discardBuffer=True)
    root = logging.getLogger()
    if not any(isinstance(h, _StdlibBridge) for h in root.handlers):
        root.addHandler(_StdlibBridge())
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)


__all__ = ["start_logging", "format_text", "format_json", "globalLogPublisher"]
