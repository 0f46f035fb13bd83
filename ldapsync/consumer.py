"""The syncrepl consumer thread: owns the python-ldap connection to the local replica.

RFC 4533 refreshAndPersist through python-ldap's ``SyncreplConsumer``. Everything that
blocks (connect, bind, polling, writing the snapshot) happens in this thread; the reactor
only gets finished ``Batch`` values, in order, through ``hand_off`` (the source passes
``reactor.callFromThread``). After each batch the cookie and the entries are saved
together, at most once per ``save_interval``. A lost connection is retried with
exponential back-off; each change of connection state is reported once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import ldap
from ldap.ldapobject import SimpleLDAPObject
from ldap.syncrepl import SyncreplConsumer

from ldapsync import snapshot
from ldapsync.syncstate import Batch, Put, SyncState

# python-ldap 3.4: result4(timeout=0) raises TypeError when nothing is pending, so poll
# with a small positive timeout; it also bounds how long stop() waits. Right after a
# message, a much shorter wait tells "the stream paused" (hand the batch over now).
POLL_TIMEOUT = 0.05
PAUSE_TIMEOUT = 0.003
SYNC_REFRESH_REQUIRED = 0x1000     # e-syncRefreshRequired (RFC 4533 §2.6)


@dataclass(frozen=True)
class Settings:
    uri: str
    base: str
    filter: str
    attributes: Sequence[str]
    bind_dn: str | None = None
    password: str | None = None
    snapshot_path: Path | None = None
    source: dict | None = None             # recorded in the snapshot: which replica and query
    backoff_min: float = 0.5
    backoff_max: float = 30.0
    network_timeout: float = 5.0
    save_interval: float = 1.0


class _Connection(SyncreplConsumer, SimpleLDAPObject):
    """python-ldap's callbacks, forwarded to the pure SyncState."""

    def __init__(self, uri: str, state: SyncState, clock: Callable[[], float]):
        SimpleLDAPObject.__init__(self, uri)
        self.state = state
        self.clock = clock

    def syncrepl_get_cookie(self):
        return self.state.cookie

    def syncrepl_set_cookie(self, cookie):
        self.state.set_cookie(cookie, self.clock())

    def syncrepl_entry(self, dn, attributes, uuid):
        attrs = {name.lower(): tuple(v.decode("utf-8", "replace") for v in values)
                 for name, values in attributes.items()}
        self.state.entry(uuid, dn, attrs, self.clock())

    def syncrepl_delete(self, uuids):
        self.state.delete(uuids, self.clock())

    def syncrepl_present(self, uuids, refreshDeletes=False):
        if uuids is None:
            self.state.present_end(refreshDeletes, self.clock())
        else:
            self.state.present(uuids)

    def syncrepl_refreshdone(self):
        self.state.refresh_done(self.clock())


class _SearchEnded(Exception):
    pass


def describe(exc: BaseException) -> str:
    """One line for a python-ldap error: its description and the server's message."""
    if isinstance(exc, ldap.LDAPError) and exc.args and isinstance(exc.args[0], dict):
        info = exc.args[0]
        text = info.get("desc", exc.__class__.__name__)
        extra = info.get("info")
        return f"{text} ({extra})" if extra else text
    return str(exc) or exc.__class__.__name__


class Consumer(threading.Thread):
    """Start with ``start()``; ``stop()`` ends it within about POLL_TIMEOUT and saves."""

    def __init__(self, settings: Settings, state: SyncState, hand_off: Callable[..., None],
                 on_batch: Callable[[Batch, tuple], None], on_state: Callable[[str, str], None],
                 prepare: Callable[[Put], object] | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(name="ldapsync", daemon=True)
        self.settings = settings
        self.state = state
        self.hand_off = hand_off            # reactor.callFromThread
        self.on_batch = on_batch            # (batch, prepared), runs in the reactor
        # per Put, work done here rather than in the reactor (mapping an entry to a record)
        self.prepare = prepare
        self.on_state = on_state            # (state, detail), runs in the reactor
        self.clock = clock
        self._stopping = threading.Event()
        # one batch in flight: while the reactor applies it, changes pile up into the next
        # one instead of queueing many small batches it would then run back to back
        self._applied = threading.Event()
        self._applied.set()
        self._conn: _Connection | None = None
        self._last_save = float("-inf")
        self._dirty = False
        self._save_failing = False         # one line when saving starts failing, one when it works again
        self._connection_state = "starting"

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    # -- the thread --
    def run(self) -> None:
        delay = self.settings.backoff_min
        while not self._stopping.is_set():
            try:
                self._session()
                delay = self.settings.backoff_min
            except Exception as exc:        # every error: report, save, back off, retry
                self._close()
                self._flush(force_save=True)
                if (isinstance(exc, ldap.LDAPError) and exc.args and isinstance(exc.args[0], dict)
                        and exc.args[0].get("result") == SYNC_REFRESH_REQUIRED):
                    self.state.drop_cookie()
                    self._report("refresh-required", "the replica refused our cookie; reloading everything")
                    continue
                self._report("disconnected", f"{describe(exc)}; retrying in {delay:.1f} s")
                if self._stopping.wait(delay):
                    break
                delay = min(delay * 2, self.settings.backoff_max)
        self._close()
        self._flush(force_save=True)

    def _session(self) -> None:
        s = self.settings
        conn = _Connection(s.uri, self.state, self.clock)
        self._conn = conn
        conn.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, s.network_timeout)
        conn.set_option(ldap.OPT_TIMEOUT, s.network_timeout)
        conn.set_option(ldap.OPT_REFERRALS, 0)
        if s.bind_dn:
            conn.simple_bind_s(s.bind_dn, s.password or "")
        elif s.uri.startswith("ldapi:"):
            conn.sasl_external_bind_s()
        self.state.begin()
        msgid = conn.syncrepl_search(s.base, ldap.SCOPE_SUBTREE, mode="refreshAndPersist",
                                     filterstr=s.filter, attrlist=list(s.attributes))
        self._report("connected", "following the replica, refreshing"
                     + (" from the saved cookie" if self.state.cookie else " everything"))
        timeout = POLL_TIMEOUT
        while not self._stopping.is_set():
            idle = False
            try:
                alive = conn.syncrepl_poll(msgid=msgid, timeout=timeout)
                timeout = PAUSE_TIMEOUT
            except ldap.TIMEOUT:
                alive, idle, timeout = True, True, POLL_TIMEOUT
            ready = self._applied.is_set()
            batch = self._flush() if ready and self.state.due(self.clock(), idle) else None
            if not ready and self.state.pending():
                timeout = PAUSE_TIMEOUT
            if batch is not None and batch.refresh_done:
                self._report("in-sync", f"in sync with the replica: {batch.entries} entries, "
                             f"{self.state.received} changes received")
            elif idle:
                self._save_if_due()
            if not alive:
                raise _SearchEnded("the replica ended the sync search")

    def _flush(self, force_save: bool = False) -> Batch | None:
        batch = self.state.take()
        if batch is not None:
            prepared = tuple(self.prepare(op) if self.prepare and isinstance(op, Put) else None
                             for op in batch.ops)
            self._applied.clear()
            self.hand_off(self._apply, batch, prepared)
            self._dirty = True
        if force_save:
            self._save()
        else:
            self._save_if_due()
        return batch

    def _apply(self, batch: Batch, prepared: tuple) -> None:
        """In the reactor."""
        try:
            self.on_batch(batch, prepared)
        finally:
            self._applied.set()

    def _save_if_due(self) -> None:
        if self._dirty and self.clock() - self._last_save >= self.settings.save_interval:
            self._save()

    def _save(self) -> None:
        path = self.settings.snapshot_path
        if path is None or not self._dirty:
            return
        try:
            snapshot.write(path, snapshot.Snapshot(source=self.settings.source or {}, cookie=self.state.cookie,
                                                   entries=self.state.entries, saved_at=time.time()))
            self._dirty = False
            if self._save_failing:
                self._save_failing = False
                self._report("saved", f"snapshot {path} saved again")
        except OSError as exc:
            if not self._save_failing:
                self._save_failing = True
                self._report("save-failed", f"cannot save the snapshot {path}: {exc.strerror}; the previous one "
                             f"stays as it was, serving from memory, retrying every {self.settings.save_interval:g} s")
        self._last_save = self.clock()

    def _report(self, state: str, detail: str) -> None:
        """Connection states go to the reactor once per change; other events every time."""
        if state == self._connection_state and state in ("disconnected", "connected", "in-sync"):
            return
        if state in ("disconnected", "connected", "in-sync"):
            self._connection_state = state
        self.hand_off(self.on_state, state, detail)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.unbind_ext()
            except Exception:
                pass
