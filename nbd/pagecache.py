"""Whether a range of a file is in the page cache, without reading it (I/O): Linux's
``cachestat(2)`` (6.5 and later) through ctypes, about 1 µs. Python has no binding for it."""

from __future__ import annotations

import ctypes
import mmap

CACHESTAT = 451        # the same number on every architecture Debian builds for (after 6.5's unification)
PAGE = mmap.PAGESIZE


class _Range(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Stat(ctypes.Structure):
    _fields_ = [("nr_cache", ctypes.c_uint64), ("nr_dirty", ctypes.c_uint64), ("nr_writeback", ctypes.c_uint64),
                ("nr_evicted", ctypes.c_uint64), ("nr_recently_evicted", ctypes.c_uint64)]


class PageCache:
    """One per reactor thread (the structures are reused from call to call)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._syscall = libc.syscall
        self._syscall.restype = ctypes.c_long
        self._range, self._stat = _Range(), _Stat()
        self._args = ctypes.byref(self._range), ctypes.byref(self._stat), ctypes.c_uint(0)
        self.works = self._call(-1) != -1 or ctypes.get_errno() != 38   # ENOSYS: a kernel before 6.5

    def _call(self, fd: int) -> int:
        return self._syscall(CACHESTAT, fd, *self._args)

    def holds(self, fd: int, offset: int, length: int) -> bool:
        """Every page of [offset, offset+length) is cached (pages being read in count: the read
        is on its way)."""
        r = self._range
        r.off, r.len = offset, length
        if self._call(fd) != 0:
            return False
        return self._stat.nr_cache >= (offset + length - 1) // PAGE - offset // PAGE + 1
