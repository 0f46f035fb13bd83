"""Page cache I/O for images (blocking: call from a thread): how much of a file is resident
(``mincore``), MemTotal, bringing ranges in (``warm``) and, for tests and benchmarks, evicting.

``resident_bytes`` maps the file read-only (libc ``mmap`` through ctypes: Python's mmap object
gives no address for a read-only map) a window at a time and asks ``mincore`` which pages are in
the page cache — what util-linux ``fincore`` does; nothing is read and nothing is pinned.

``warm`` lowers the calling thread's CPU and I/O priority (nice 19, I/O class idle), then per
chunk asks the kernel to read ahead (``posix_fadvise(WILLNEED)``) and reads the chunk into one
reused buffer so it is really in (WILLNEED alone returns before the I/O is done and may be
dropped under load). It stops at ``deadline`` or when ``cancelled()`` says so. No mlock: the
pages stay ordinary page cache that the kernel may reclaim.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bootserverd.ops.libc import MAP_FAILED, RESIDENT, libc

PAGE = mmap.PAGESIZE
WINDOW = 1 << 30                  # bytes mapped at a time by resident_bytes
CHUNK = 4 << 20                   # bytes read per step by warm


# ioprio_set(2): no libc wrapper; the syscall number by architecture
_IOPRIO_SET = {"x86_64": 251, "aarch64": 30, "armv7l": 314, "i686": 289, "ppc64le": 273, "s390x": 282,
               "riscv64": 30}.get(platform.machine())
_IOPRIO_WHO_PROCESS, _IOPRIO_CLASS_IDLE = 1, 3


def resident_bytes(path, windows: int = WINDOW) -> int:
    """Bytes of the file in the page cache (whole pages, the last one counted whole as fincore
    does). Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        pages = 0
        for start in range(0, size, windows):
            length = min(windows, size - start)
            addr = libc.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, start)
            if addr in (None, MAP_FAILED):
                err = ctypes.get_errno()
                raise OSError(err, f"mmap: {os.strerror(err)}", str(path))
            try:
                vec = (ctypes.c_ubyte * ((length + PAGE - 1) // PAGE))()
                if libc.mincore(addr, length, vec) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"mincore: {os.strerror(err)}", str(path))
                pages += bytes(vec).translate(RESIDENT).count(1)
            finally:
                libc.munmap(addr, length)
        return pages * PAGE
    finally:
        os.close(fd)


def mem_total() -> int:
    """MemTotal of /proc/meminfo in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def lower_priority() -> str:
    """Make the calling thread nice 19 and I/O class idle; says what it managed. On Linux both
    are per thread: a dedicated thread is needed (a shared pool's thread would stay low)."""
    tid = threading.get_native_id()
    done = []
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 19)
        done.append("nice 19")
    except (OSError, AttributeError):
        pass
    if _IOPRIO_SET is not None:
        syscall = libc.syscall
        syscall.restype = ctypes.c_long
        if syscall(ctypes.c_long(_IOPRIO_SET), ctypes.c_int(_IOPRIO_WHO_PROCESS), ctypes.c_int(tid),
                   ctypes.c_int(_IOPRIO_CLASS_IDLE << 13)) == 0:
            done.append("I/O idle")
    return ", ".join(done) or "normal priority"


@dataclass
class Warmed:
    bytes: int = 0                # bytes read (of the planned ones)
    seconds: float = 0.0
    stopped: str = ""             # "" when complete, else why it stopped early


def warm(path, ranges: Iterable[tuple[int, int]], cancelled: Callable[[], bool] = lambda: False,
         deadline: float | None = None, chunk: int = CHUNK, clock: Callable[[], float] = time.monotonic) -> Warmed:
    """Bring ``ranges`` of the file into the page cache, a chunk at a time (see the module
    docstring). ``deadline``: a ``clock()`` value after which it stops. Raises OSError."""
    started = clock()
    result = Warmed()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        steps = [(o, min(chunk, end - o)) for offset, length in ranges
                 for end in (min(size, offset + length),) for o in range(offset, end, chunk)]
        if steps and hasattr(os, "posix_fadvise"):
            os.posix_fadvise(fd, steps[0][0], steps[0][1], os.POSIX_FADV_WILLNEED)
        for i, (offset, length) in enumerate(steps):
            if cancelled():
                result.stopped = "cancelled"
                break
            if deadline is not None and clock() >= deadline:
                result.stopped = "time limit reached"
                break
            if i + 1 < len(steps) and hasattr(os, "posix_fadvise"):   # the next chunk's I/O starts now
                os.posix_fadvise(fd, steps[i + 1][0], steps[i + 1][1], os.POSIX_FADV_WILLNEED)
            got = os.preadv(fd, [view[:length]], offset)
            result.bytes += got
    finally:
        os.close(fd)
        del view
    result.seconds = clock() - started
    return result


def evict(path) -> None:
    """Drop the file's pages from the page cache (written back first: DONTNEED leaves dirty
    pages), for tests and benchmarks."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fdatasync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
