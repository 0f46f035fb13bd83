"""RFC 4533 client bookkeeping for one replica, and the batching of its changes (pure).

The consumer thread feeds it what python-ldap's SyncreplConsumer reports (entries, deletes,
present UUIDs, the end of a present phase, refreshDone, cookies) with ``now``; it keeps the
entryUUID → entry map that deletes (which arrive as UUIDs) need, turns the present phase
into deletes, and cuts the stream into ordered batches: a batch is due when it is big, when
its oldest change is ``batch_delay`` old (``refresh_delay`` during a refresh), or at once when the stream goes idle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

Attrs = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Put:
    uuid: str
    dn: str
    attrs: Attrs


@dataclass(frozen=True)
class Delete:
    uuid: str


@dataclass(frozen=True)
class Batch:
    ops: tuple[Put | Delete, ...]
    cookie: str | None
    refresh_done: bool          # this batch ends the refresh phase: the replica is in sync
    entries: int                # how many entries the replica holds after this batch
    refreshing: bool = False    # more of the refresh phase follows this batch


class SyncState:
    def __init__(self, entries: Mapping[str, tuple[str, Attrs]] | None = None, cookie: str | None = None,
                 batch_max: int = 500, batch_delay: float = 0.05, refresh_delay: float = 0.2):
        self.entries: dict[str, tuple[str, Attrs]] = dict(entries or {})
        self.cookie = cookie
        self.batch_max = batch_max
        self.batch_delay = batch_delay
        # a first load comes as a stream: fewer, bigger batches (each one rebuilds the model)
        self.refresh_delay = max(refresh_delay, batch_delay)
        self._ops: list[Put | Delete] = []
        self._first_at: float | None = None
        self._cookie_changed = False
        self._refresh_done = False
        self.begin()

    # -- one sync search --
    def begin(self) -> None:
        """A new search starts (at start-up or after a reconnect) from ``self.cookie``."""
        self.refreshing = True
        self.full = self.cookie is None      # no cookie: whatever the refresh does not name is gone
        self._present: set[str] = set()
        self._seen: set[str] = set()
        self.received = 0                    # entries and deletes this search has brought

    def drop_cookie(self) -> None:
        """The server refused the cookie (e-syncRefreshRequired): the next search is a full one."""
        self.cookie = None

    def entry(self, uuid: str, dn: str, attrs: Attrs, now: float) -> None:
        self.entries[uuid] = (dn, attrs)
        self.received += 1
        if self.refreshing:
            self._seen.add(uuid)
        self._add(Put(uuid, dn, attrs), now)

    def delete(self, uuids, now: float) -> None:
        for uuid in uuids:
            if self.entries.pop(uuid, None) is not None:
                self.received += 1
                self._add(Delete(uuid), now)

    def present(self, uuids) -> None:
        self._present.update(uuids)
        if self.refreshing:
            self._seen.update(uuids)

    def present_end(self, refresh_deletes: bool, now: float) -> None:
        """End of a present phase: entries not named present are gone (RFC 4533 §3.3.1);
        after a delete phase (``refresh_deletes``) the deletes were explicit already."""
        if not refresh_deletes:
            self.delete([u for u in self.entries if u not in self._present], now)
        self._present = set()

    def refresh_done(self, now: float) -> None:
        if self.full:
            self.delete([u for u in self.entries if u not in self._seen], now)
        self.refreshing = False
        self.full = False
        self._seen = set()
        self._refresh_done = True
        self._mark(now)

    def set_cookie(self, cookie: str, now: float) -> None:
        if cookie != self.cookie:
            self.cookie = cookie
            self._cookie_changed = True
            self._mark(now)

    # -- batching --
    def _add(self, op: Put | Delete, now: float) -> None:
        self._ops.append(op)
        self._mark(now)

    def _mark(self, now: float) -> None:
        if self._first_at is None:
            self._first_at = now

    def pending(self) -> bool:
        return bool(self._ops) or self._cookie_changed or self._refresh_done

    def due(self, now: float, idle: bool) -> bool:
        """Hand the batch over now? ``idle``: nothing more is waiting on the connection."""
        if not self.pending():
            return False
        # during a refresh a pause in the stream is not its end: refreshDone is
        if self._refresh_done or (idle and not self.refreshing) or len(self._ops) >= self.batch_max:
            return True
        return now - self._first_at >= (self.refresh_delay if self.refreshing else self.batch_delay)

    def take(self) -> Batch | None:
        if not self.pending():
            return None
        batch = Batch(tuple(self._ops), self.cookie, self._refresh_done, len(self.entries), self.refreshing)
        self._ops = []
        self._first_at = None
        self._cookie_changed = False
        self._refresh_done = False
        return batch
