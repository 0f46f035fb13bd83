"""A few threads that copy export bytes to sockets with sendfile (I/O), so that neither a read
from the disk nor the copy of a large reply holds the one reactor thread.

The reactor answers a read of at most ``INLINE_MAX`` itself when its pages are in the page
cache and up to date, which it asks ``mincore`` (nbd.pagecache, ~1.5 µs; a range found cached
is not asked about again until the ranges are forgotten, every second); anything else (pages on
the disk or still being read in, a larger read, a reply the full socket cut short) goes to a
thread, which sends the range with ``os.sendfile`` (the GIL is released while it copies or
waits for the disk) and reports back to the reactor. A connection has at most one range in the
pool at a time, so its answers stay in order; the pool's queue is first come, first served.

The thread works on the connection's duplicates of its socket and file descriptors (made at
its first range for the threads, closed when it ends and no range of it is in a thread): the
connection may end, and its own descriptors close and be reused, while the thread still sends.
"""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from twisted.internet.task import LoopingCall

from .pagecache import FileMap, PageCache

INLINE_MAX = 128 << 10     # the largest read the reactor answers itself when it is in memory
CACHED_FRESH = 1.0         # ranges found cached are forgotten this often (the kernel may evict them)
MAX_REMEMBERED = 1 << 16   # ranges remembered at most until then

Done = Callable[[int, "str | None"], None]   # (bytes sent, why the connection cannot go on)


def send_range(sockfd: int, fd: int, offset: int, length: int) -> tuple[int, str | None]:
    """sendfile ``length`` bytes of ``fd`` from ``offset`` until done or the socket is full:
    (bytes sent, None) or (bytes sent, the problem that ends the connection)."""
    sent = 0
    try:
        while sent < length:
            k = os.sendfile(sockfd, fd, offset + sent, length - sent)
            if k == 0:     # the header promised data we cannot produce: hard disconnect (spec)
                return sent, "image file shorter than its size at open (truncated in place?)"
            sent += k
    except BlockingIOError:
        pass
    except OSError as e:
        gone = e.errno in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)
        return sent, (f"connection lost mid-reply: {e.strerror}" if gone else f"sendfile failed: {e.strerror}")
    return sent, None


class SendPool:
    def __init__(self, reactor, threads: int) -> None:
        """``threads``: 0 sends everything from the reactor thread, as before the pool."""
        self.reactor = reactor
        self.threads = threads
        self.page_cache = PageCache()
        self._cached: set[tuple[str, int, int]] = set()   # (file, offset, length) found cached
        self._forget = LoopingCall(self._cached.clear)
        self._forget.clock = reactor
        self._pool: ThreadPoolExecutor | None = None

    @property
    def active(self) -> bool:
        return self._pool is not None

    def start(self) -> None:
        if self.threads and self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="nbd-send")
            self._forget.start(CACHED_FRESH, now=False)

    def resize(self, threads: int) -> None:
        """SIGHUP: the ranges already queued are sent by the old threads, which then end."""
        if threads != self.threads:
            self.stop(wait=False)
            self.threads = threads
            self.start()

    def stop(self, wait: bool = True) -> None:
        """After the ranges queued (each is bounded: the sockets are non-blocking)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            self._forget.stop()
            self._cached.clear()
            pool.shutdown(wait=wait)

    def in_memory(self, file: str, fmap: FileMap, offset: int, length: int) -> bool:
        """The reactor may send this range of ``file`` (an export's identity, mapped by ``fmap``)
        itself: there are no threads, or it is small and its pages are cached and up to date.
        A range found so is taken as cached until the next second's forgetting, without asking
        again: the clients of a storm read the same ranges one after the other, and a set
        lookup is cheaper than a syscall."""
        if self._pool is None:
            return True                 # no threads: the reactor sends everything
        if length > INLINE_MAX:
            return False
        key = (file, offset, length)
        if key in self._cached:
            return True
        if not self.page_cache.holds(fmap, offset, length):
            return False
        if len(self._cached) < MAX_REMEMBERED:
            self._cached.add(key)
        return True

    def submit(self, sockfd: int, fd: int, offset: int, length: int, done: Done) -> None:
        """Send the range from a thread; ``done(sent, problem)`` runs in the reactor after.
        ``sockfd`` and ``fd`` must stay open until then: the connection's duplicates."""
        self._pool.submit(self._send, sockfd, fd, offset, length, done)

    def _send(self, sockfd: int, fd: int, offset: int, length: int, done: Done) -> None:
        try:
            sent, problem = send_range(sockfd, fd, offset, length)
        except Exception as e:      # never leave the connection waiting for an answer from here
            sent, problem = 0, f"sendfile failed: {e!r}"
        self.reactor.callFromThread(done, sent, problem)
