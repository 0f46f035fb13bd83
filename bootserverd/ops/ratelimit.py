"""One rate-limited log rule for every service (pure: the caller passes ``now``).

A repeated event (a refused client, a malformed packet, a rogue server) is logged once per key
per interval; the next line that gets through says how many were hidden in between, so
``journalctl -fu bootserverd`` shows each problem without a flood.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Hashable


class LogThrottle:
    def __init__(self, interval: float = 60.0, max_keys: int = 4096):
        self.interval = interval
        self.max_keys = max_keys          # bounded: a flood of distinct keys cannot grow memory
        self._seen: OrderedDict[Hashable, tuple[float, int]] = OrderedDict()   # key → (logged at, hidden)

    def admit(self, key: Hashable, now: float) -> int | None:
        """None: stay quiet. Otherwise log now; the number is how many were hidden before."""
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            self._seen[key] = (entry[0], entry[1] + 1)
            return None
        hidden = entry[1] if entry is not None else 0
        self._seen[key] = (now, 0)
        self._seen.move_to_end(key)
        while len(self._seen) > self.max_keys:
            self._seen.popitem(last=False)
        return hidden

    def __len__(self) -> int:
        """How many keys are remembered (at most ``max_keys``)."""
        return len(self._seen)

    def hidden(self) -> int:
        """Events suppressed and not yet reported (for /status)."""
        return sum(h for _, h in self._seen.values())


def suffix(hidden: int) -> str:
    """' (and 12 more like it in the last minute)' for a log line, '' when none were hidden."""
    return f" (and {hidden} more like it since the last line)" if hidden else ""
