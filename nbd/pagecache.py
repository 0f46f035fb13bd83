"""Whether a range of an export is in the page cache and readable now, without reading it (I/O):
``mincore(2)`` on a read-only mapping of the file, through ctypes (Python has no binding, and
its mmap object gives no address for a read-only map).

Not ``cachestat(2)``: it also counts the pages readahead has only begun to read, and a sendfile
of those waits for the disk. mincore counts a page only once it is up to date. The mapping is
never read through, so no page is brought in by asking.
"""

from __future__ import annotations

import ctypes
import mmap

from bootserverd.ops.libc import MAP_FAILED, RESIDENT, libc

PAGE = mmap.PAGESIZE
MAX_PAGES = 64           # the longest range asked about, in pages (nbd.sendpool.INLINE_MAX and more)



class FileMap:
    """A read-only shared mapping of one open file, for ``holds``; ``close`` unmaps it. Costs
    address space only (one per connection)."""

    def __init__(self, fd: int, size: int) -> None:
        self.size = size
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0) if size else None
        self.addr = None if addr in (None, MAP_FAILED) else addr

    def close(self) -> None:
        if self.addr is not None:
            libc.munmap(self.addr, self.size)
            self.addr = None


class PageCache:
    """One per reactor thread (its page vector is reused from call to call)."""

    def __init__(self) -> None:
        self._vec = ctypes.create_string_buffer(MAX_PAGES)

    def holds(self, fmap: FileMap, offset: int, length: int) -> bool:
        """Every page of [offset, offset+length) is cached and up to date."""
        first = offset // PAGE
        pages = (offset + length - 1) // PAGE - first + 1
        if fmap.addr is None or pages > MAX_PAGES:
            return False
        if libc.mincore(fmap.addr + first * PAGE, pages * PAGE, self._vec) != 0:
            return False
        return b"\0" not in self._vec.raw[:pages].translate(RESIDENT)
