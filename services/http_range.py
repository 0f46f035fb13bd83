"""Pure HTTP byte-range logic (RFC 9110 §13, §14): Range, If-Range, If-None-Match → a decision.

Stdlib only, no I/O: the resources feed it header values and the file's size and ETag, and
send what it decides. Only single ranges are served; a multi-range request gets the whole
file (RFC 9110 §14.2 lets a server ignore Range), which is what download tools cope with best.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
_BIG = 1 << 63      # past the end of any file


def _number(digits: str) -> int:
    """A byte position; never int() of thousands of digits (Python refuses > 4300: a 500)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _BIG


@dataclass(frozen=True)
class Decision:
    status: int                 # 200, 206, 304 or 416
    start: int = 0              # first byte to send
    length: int = 0             # bytes to send (0 for 304/416)
    content_range: str | None = None

    @property
    def end(self) -> int:
        """Last byte sent (inclusive), as Content-Range writes it."""
        return self.start + self.length - 1


def parse_range(header: str, size: int) -> tuple[int, int] | str | None:
    """'bytes=a-b' → (start, end) inclusive, clipped to the file; 'unsatisfiable'; or None
    when the header is malformed, multi-range or not in bytes (then it is ignored)."""
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    parts = [p for p in specs.split(",") if p.strip()]
    if len(parts) != 1:
        return None
    match = _SPEC.match(parts[0])
    if not match or (match[1] == "" and match[2] == ""):
        return None
    first, last = match[1], match[2]
    if first == "":                                   # suffix: the last N bytes
        count = _number(last)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - count), size - 1
    start = _number(first)
    if last != "" and _number(last) < start:
        return None                                   # invalid spec: ignore the header
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if last == "" else min(_number(last), size - 1)
    return start, end


def _etags(header: str) -> list[str]:
    return [t.strip() for t in header.split(",") if t.strip()]


def decide(method: str, size: int, etag: str | None, range_header: str | None = None,
           if_range: str | None = None, if_none_match: str | None = None,
           last_modified: str | None = None) -> Decision:
    """What to answer to a GET/HEAD of a file of ``size`` bytes whose strong ETag is ``etag``
    (quoted, e.g. '"ab12…"'; None when the file has none)."""
    if if_none_match is not None and etag is not None and method in ("GET", "HEAD"):
        tags = _etags(if_none_match)
        # weak comparison (RFC 9110 §13.1.2): W/ prefixes do not matter here
        if "*" in tags or etag in [t[2:] if t.startswith("W/") else t for t in tags]:
            return Decision(304)
    full = Decision(200, 0, size)
    if range_header is None or method not in ("GET", "HEAD"):
        return full
    if if_range is not None:
        value = if_range.strip()
        # strong comparison only: a weak tag or a changed file means "send it all"
        if value.startswith('"') or value.startswith("W/"):
            if etag is None or value != etag:
                return full
        elif last_modified is None or value != last_modified:
            return full
    parsed = parse_range(range_header, size)
    if parsed is None:
        return full
    if parsed == "unsatisfiable":
        return Decision(416, content_range=f"bytes */{size}")
    start, end = parsed
    return Decision(206, start, end - start + 1, f"bytes {start}-{end}/{size}")
