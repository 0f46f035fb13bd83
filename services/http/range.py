"""Pure HTTP byte-range logic (RFC 9110 §13, §14): Range, If-Range, If-None-Match → a decision.

Stdlib only, no I/O: the resources feed it header values and the file's size and ETag, and
send what it decides. Several ranges (zsync asks for dozens at once) are answered as one
multipart/byteranges body (RFC 9110 §14.6): overlapping or touching ranges are merged, and a
request for more than MAX_RANGES ranges gets the whole file (§14.2 lets a server ignore Range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPEC = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
_BIG = 1 << 63      # past the end of any file
MAX_RANGES = 64     # more in one request: the whole file is sent instead


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
    parts: tuple[tuple[int, int], ...] = ()    # several ranges: (first, last) inclusive, sorted

    @property
    def multipart(self) -> bool:
        return len(self.parts) > 1

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
    return _spec(parts[0], size)


def _spec(text: str, size: int) -> tuple[int, int] | str | None:
    """One byte-range-spec → (first, last) clipped to the file, 'unsatisfiable' or None (invalid)."""
    match = _SPEC.match(text)
    if not match or (match[1] == "" and match[2] == ""):
        return None
    first, last = match[1], match[2]
    if first == "":
        count = _number(last)
        if count == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - count), size - 1
    start = _number(first)
    if last != "" and _number(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, size - 1 if last == "" else min(_number(last), size - 1)


def parse_ranges(header: str, size: int, max_ranges: int = MAX_RANGES) -> list[tuple[int, int]] | str | None:
    """'bytes=a-b,c-d,...' → sorted, merged (first, last) spans; 'unsatisfiable' when none is
    satisfiable; None when the header is to be ignored (not bytes, an invalid spec, too many)."""
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        return None
    texts = [p for p in specs.split(",") if p.strip()]
    if not texts or len(texts) > max_ranges:
        return None
    spans = []
    for text in texts:
        span = _spec(text, size)
        if span is None:
            return None
        if span != "unsatisfiable":
            spans.append(span)
    if not spans:
        return "unsatisfiable"
    merged = [list(sorted(spans)[0])]
    for first, last in sorted(spans)[1:]:
        if first <= merged[-1][1] + 1:          # overlapping or touching: one part
            merged[-1][1] = max(merged[-1][1], last)
        else:
            merged.append([first, last])
    return [(a, b) for a, b in merged]


def multipart_layout(parts, size: int, content_type: str, boundary: str) -> tuple[list, int]:
    """The multipart/byteranges body as segments — bytes to send as they are, or (offset,
    length) spans of the file — and its exact length, for Content-Length."""
    segments: list = []
    for first, last in parts:
        # every delimiter, the first too, starts with CRLF (RFC 2046 §5.1.1): zsync reads a
        # line before each boundary, and nginx sends the same
        head = (f"\r\n--{boundary}\r\nContent-Type: {content_type}\r\n"
                f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n")
        segments += [head.encode("latin-1"), (first, last - first + 1)]
    segments.append(f"\r\n--{boundary}--\r\n".encode("latin-1"))
    total = sum(len(s) if isinstance(s, bytes) else s[1] for s in segments)
    return segments, total


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
    parsed = parse_ranges(range_header, size)
    if parsed is None:
        return full
    if parsed == "unsatisfiable":
        return Decision(416, content_range=f"bytes */{size}")
    if len(parsed) > 1:
        return Decision(206, parts=tuple(parsed))
    start, end = parsed[0]
    return Decision(206, start, end - start + 1, f"bytes {start}-{end}/{size}")
