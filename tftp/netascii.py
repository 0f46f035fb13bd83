"""Netascii (RFC 764 as TFTP uses it): CR -> CR NUL, LF -> CR LF, converted while streaming.

Pure: the view reads through the file object it is given (`.size`, `.read(offset, length)`,
`.close()`) and opens nothing itself.
"""
from __future__ import annotations

CHUNK = 1 << 16
MAX_SIZE = 16 << 20   # the size pass runs in the reactor: text files only, not images


def encode(chunk: bytes) -> bytes:
    """Netascii of a chunk. Byte-wise, so chunks compose."""
    return chunk.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


class NetasciiFile:
    """Netascii view of a file, converted while streaming (the transfer reads forward and
    looks back at most `lookback` bytes, one window). The size needs one chunked pass at open."""

    def __init__(self, f, lookback: int) -> None:
        self._f = f
        size = off = 0
        while off < f.size:
            c = f.read(off, min(CHUNK, f.size - off))
            if not c:
                break
            size += len(c) + c.count(b"\r") + c.count(b"\n")
            off += len(c)
        self.size = size
        self._lookback = lookback
        self._rewind()

    def _rewind(self) -> None:
        self._buf, self._start, self._in = b"", 0, 0

    def read(self, offset: int, length: int) -> bytes:
        if offset < self._start:
            self._rewind()   # looked back further than we kept: correct, just slower
        end = offset + length
        while self._start + len(self._buf) < end and self._in < self._f.size:
            c = self._f.read(self._in, min(CHUNK, self._f.size - self._in))
            if not c:
                break
            self._in += len(c)
            self._buf += encode(c)
        keep = max(self._start, offset - self._lookback)
        if keep > self._start:
            self._buf = self._buf[keep - self._start:]
            self._start = keep
        return self._buf[offset - self._start:end - self._start]

    def close(self) -> None:
        self._f.close()
