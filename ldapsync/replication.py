"""Replication health: how far the local replica is behind the centre (pure, stdlib only).

Fed with the contextCSN values of the replica and of the centre (or the error that kept
either from being read) and ``now`` (epoch seconds: CSNs carry wall-clock UTC times), it
keeps the lag and says what to log — one line when the lag passes the threshold, one when
it is back to 0, one per change of "can / cannot compare" — never one per check.

The lag, in seconds:
- 0 when the replica has every change the centre has (the same CSN per server ID);
- when the replica lacks changes: now − the time of the newest change it lacks (a lower
  bound of how stale it is: it has nothing from that moment on, maybe less);
- when the two cannot be compared (the centre is down): now − the last time the replica was
  known current (or since checking began), so it grows while nothing can be confirmed.
"""

from __future__ import annotations

import datetime
from typing import Sequence


def csn_time(csn: str) -> datetime.datetime:
    """'20261121201410.426911Z#000000#000#000000' → its UTC time."""
    return datetime.datetime.strptime(csn.split("#", 1)[0], "%Y%m%d%H%M%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def _by_sid(csns: Sequence[str]) -> dict[str, str]:
    return {c.split("#")[2] if c.count("#") >= 3 else "000": c for c in csns}


def missing_since(central: Sequence[str], local: Sequence[str]) -> float | None:
    """Epoch of the newest central change the replica lacks; None when it lacks nothing."""
    ours = _by_sid(local)
    newest = None
    for sid, csn in _by_sid(central).items():
        mine = ours.get(sid)
        if mine is None or mine < csn:        # CSNs of one server ID sort by time as text
            when = csn_time(csn).timestamp()
            newest = when if newest is None else max(newest, when)
    return newest


class LagTracker:
    def __init__(self, warn_after: float, started: float):
        self.warn_after = warn_after
        self.started = started
        self.checked_at: float | None = None
        self.last_current: float | None = None     # the last check that found the replica current
        self.lacking_since: float | None = None    # newest central change the replica lacks
        self.error: str | None = None
        self.local: tuple[str, ...] = ()
        self.central: tuple[str, ...] = ()
        self.warned = False
        self.worst = 0.0                           # the largest lag since the last warning

    def observe(self, now: float, local: Sequence[str] | None, central: Sequence[str] | None,
                error: str | None = None) -> list[tuple[str, str]]:
        """One check's result → (level, line) pairs to log."""
        lines: list[tuple[str, str]] = []
        self.checked_at = now
        if error is not None or local is None or central is None:
            error = error or "no contextCSN to compare"
            if self.error is None:
                lines.append(("warn", f"cannot compare the replica with the centre: {error}"))
            self.error = error
        else:
            if self.error is not None:
                lines.append(("info", "the replica and the centre can be compared again"))
            self.error = None
            self.local, self.central = tuple(sorted(local)), tuple(sorted(central))
            self.lacking_since = missing_since(central, local) if central else None
            if self.lacking_since is None:
                self.last_current = now
        lag = self.lag(now)
        self.worst = max(self.worst, lag)
        if lag > self.warn_after and not self.warned:
            self.warned = True
            why = "it cannot be compared" if self.error else "it lacks changes"
            lines.append(("warn", f"the replica is {lag:.0f} s behind the centre ({why}; "
                                  f"threshold {self.warn_after:g} s)"))
        elif lag == 0 and self.warned:
            self.warned = False
            lines.append(("info", f"the replica caught up with the centre (it was up to {self.worst:.0f} s behind)"))
        if lag == 0:
            self.worst = 0.0
        return lines

    def lag(self, now: float) -> float:
        if self.checked_at is None:
            return 0.0                             # not checked yet: status says "unknown"
        if self.error is not None:
            since = self.last_current if self.last_current is not None else self.started
            return max(0.0, now - since)
        if self.lacking_since is None:
            return 0.0
        return max(0.0, now - self.lacking_since)

    def state(self) -> str:
        if self.checked_at is None:
            return "unknown"
        if self.error is not None:
            return "cannot compare"
        return "in sync" if self.lacking_since is None else "behind"

    def status(self, now: float) -> dict:
        return {"state": self.state(), "lag_seconds": round(self.lag(now), 3), "checked_at": self.checked_at,
                "last_current": self.last_current, "error": self.error,
                "replica_csn": list(self.local), "central_csn": list(self.central)}
