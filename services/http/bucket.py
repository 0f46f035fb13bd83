"""The bandwidth share of laptop updates (pure): one token bucket for every image, diff and
zsync download together (``http.update_rate``), so that a room of laptops fetching the new image
never takes the server's link or its reactor from the PCs booting (kernels, NBD, TFTP are not
counted and never wait).

Tokens are bytes; ``rate`` of them arrive per second up to ``burst``. A download asks for what it
would send next and gets a grant of at most ``GRANT`` bytes, now or after a wait; a wait is a
reservation (the bucket goes into debt), so downloads are served in the order they asked and
twenty of them take turns in small pieces instead of one taking a second's worth at once.
"""

from __future__ import annotations

GRANT = 256 << 10


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None) -> None:
        """``rate``: bytes per second (0: no limit); ``burst``: default a quarter second of it
        (the first download does not run ahead of the others by more)."""
        self.rate = rate
        self.burst = burst if burst is not None else max(rate / 4, GRANT)
        self.tokens = self.burst
        self.stamp: float | None = None

    @property
    def limited(self) -> bool:
        return self.rate > 0

    def _fill(self, now: float) -> None:
        if self.stamp is not None and now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now if self.stamp is None else max(self.stamp, now)

    def grant(self, now: float, want: int) -> tuple[int, float]:
        """(bytes, seconds): send that many bytes (at most ``want`` and ``GRANT``) after waiting
        that long (0: now). A wait is a reservation: the bytes are the caller's when it wakes,
        and a later caller waits behind it, so downloads take turns in the order they asked."""
        if not self.limited:
            return want, 0.0
        self._fill(now)
        granted = min(want, GRANT, max(int(self.burst), 1))
        self.tokens -= granted
        return granted, (-self.tokens / self.rate if self.tokens < 0 else 0.0)

    def refund(self, count: int) -> None:
        """Bytes granted and not sent after all (the socket was full, the download ended)."""
        if self.limited:
            self.tokens = min(self.burst, self.tokens + count)
