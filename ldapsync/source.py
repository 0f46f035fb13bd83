"""``inventory.source: ldap``: the local LDAP replica as an InventorySource.

``load()`` never talks to LDAP: it serves the saved snapshot (possibly empty), so the
daemon starts, and boots clients, while the replica is down. ``start()`` runs the consumer
thread, which catches up from the saved cookie; each batch it hands over (in the reactor)
becomes one new ``InventoryRecords``. The app logs device/school/defaults changes; this module logs
the connection state, image release changes and entries it cannot use (once each).
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import time
from pathlib import Path
from typing import Callable

from twisted.logger import Logger

from bootserverd.config.settings import LdapConfig
from bootserverd.model.objects import InventoryRecords
from bootserverd.config.schema import Problem, SchemaError
from ldapsync import snapshot
from ldapsync.consumer import Consumer, Settings
from ldapsync.health import ReplicationMonitor
from ldapsync.mapping import PROFILES, DirectoryView, Entry
from ldapsync.syncstate import Batch, Delete, Put, SyncState

log = Logger(namespace="bootserverd.directory")
# A cyclic-GC pass holds the GIL while it walks the heap: 50-80 ms with 10,000 entries loaded
# (tests/bench/ldap_bench.py), a reactor stall. The entries and records are long-lived and
# acyclic (refcounting frees them), so while a refresh streams in (at start, or after the
# replica refused our cookie) automatic collection waits, at most GC_PAUSE_MAX seconds; when
# the refresh ends, what is alive is frozen out of later passes (gc.freeze).
GC_PAUSE_MAX = 60.0


class LdapInventorySource:
    def __init__(self, config: LdapConfig, state_dir: Path, clock=None, server_hostname: str | None = None,
                 **tuning):
        self.config = config
        self.profile = PROFILES[config.profile]
        self.path = Path(state_dir) / snapshot.FILENAME
        self._reactor = clock
        # Puavo's boot-server step of inheritance needs to know which boot server we are
        self.view = DirectoryView(self.profile, server_hostname or socket.gethostname())
        self.tuning = tuning                      # Settings overrides (tests, benchmark)
        self.state: SyncState | None = None
        self._password: str | None = None
        self._consumer: Consumer | None = None
        self.monitor: ReplicationMonitor | None = None
        self._deliver: Callable[[InventoryRecords], None] | None = None
        self._problems: frozenset[str] = frozenset()
        self._releases: dict[str, str] = {}
        self.connection = "not started"
        self.connection_detail = ""
        self.connection_since = time.time()
        self.devices = 0
        self.last_change: float | None = None
        self.snapshot_saved_at: float | None = None
        self._gc_paused = False
        self._gc_timer = None

    def _source_id(self) -> dict[str, str]:
        return {"uri": self.config.uri, "base": self.config.base, "profile": self.profile.name,
                "filter": self.profile.filter}

    def _read_password(self) -> str | None:
        path = self.config.password_file
        if path is None:
            return None
        try:
            password = Path(path).read_text(encoding="utf-8").rstrip("\r\n")
            mode = os.stat(path).st_mode & 0o777
        except OSError as exc:
            raise SchemaError([Problem(str(path), None, "inventory.ldap.password_file",
                                       f"cannot read: {exc.strerror}")]) from None
        if mode & 0o007:
            log.warn("directory: the password file {path} is readable by every user (mode {mode:04o}); "
                     "make it 0640 root:bootserverd or 0600", path=str(path), mode=mode)
        return password

    def load(self) -> InventoryRecords:
        self._password = self._read_password()
        try:
            snap = snapshot.read(self.path)
        except snapshot.SnapshotError as exc:
            log.warn("directory: snapshot not used, reloading everything from the replica: {err}", err=str(exc))
            snap = None
        entries, cookie = {}, None
        if snap is not None:
            same_query = all(snap.source.get(k) == v for k, v in self._source_id().items()
                             if k in ("profile", "filter"))
            if same_query:
                entries = snap.entries
                cookie = snap.cookie if dict(snap.source) == self._source_id() else None
            self.snapshot_saved_at = snap.saved_at
        self.view = DirectoryView(self.profile, self.view.server_hostname)
        for uuid, (dn, attrs) in entries.items():
            self.view.put(uuid, dn, attrs)
        self.state = SyncState(entries, cookie, **{k: self.tuning[k] for k in ("batch_max", "batch_delay",
                                                                               "refresh_delay") if k in self.tuning})
        directory = self._build()
        self.devices = len(directory.devices)
        if snap is None:
            log.info("directory: no snapshot in {path} yet; waiting for {uri}", path=str(self.path),
                     uri=self.config.uri)
        else:
            log.info("directory: serving {devices} devices from the snapshot of {when} ({cookie})",
                     devices=len(directory.devices), when=_when(snap.saved_at),
                     cookie="will resume from its cookie" if cookie else "will reload everything")
        return directory

    def start(self, deliver: Callable[[InventoryRecords], None]) -> None:
        if self.state is None:
            self.load()
        self._deliver = deliver
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        settings = Settings(uri=self.config.uri, base=self.config.base, filter=self.profile.filter,
                            attributes=self.profile.attributes, bind_dn=self.config.bind_dn,
                            password=self._password, snapshot_path=self.path, source=self._source_id(),
                            **{k: v for k, v in self.tuning.items() if k not in ("batch_max", "batch_delay",
                                                                               "refresh_delay")})
        self._consumer = Consumer(settings, self.state, reactor.callFromThread, self._apply, self._state_changed,
                                  prepare=self._prepare)
        self.state = None                       # the consumer thread owns it from here on
        self._pause_gc()
        self._consumer.start()
        c = self.config
        self.monitor = ReplicationMonitor(reactor, uri=c.uri, base=c.base, bind_dn=c.bind_dn, password=self._password,
                                          central_uri=c.central_uri, ca_file=c.ca_file,
                                          interval=c.lag_check_interval, warn_after=c.lag_warn_seconds)
        self.monitor.start()

    def stop(self) -> None:
        monitor, self.monitor = self.monitor, None
        if monitor is not None:
            monitor.stop()
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop()
        self._resume_gc(freeze=False)
        self._deliver = None

    def reload(self) -> None:
        """SIGHUP: the replica is followed live; nothing to re-read."""

    # -- in the reactor --
    def _prepare(self, op: Put):
        """In the consumer thread: map the entry there, so the reactor only files records."""
        return self.profile.map(Entry(op.dn, op.attrs))

    def _apply(self, batch: Batch, records: tuple) -> None:
        if self._consumer is None:             # stopped meanwhile
            return
        if not batch.refreshing:
            self._resume_gc(freeze=True)
        for op, record in zip(batch.ops, records):
            if isinstance(op, Delete):
                self.view.delete(op.uuid)
            else:
                self.view.put_record(op.uuid, record)
        log.debug("directory: batch of {n} changes, {entries} entries, cookie {cookie}", n=len(batch.ops),
                  entries=batch.entries, cookie=batch.cookie)
        if not batch.ops:
            return                              # a new cookie only: the model is unchanged
        directory = self._build()
        self.devices = len(directory.devices)
        self.last_change = time.time()
        if self._deliver is not None:
            self._deliver(directory)

    def _build(self) -> InventoryRecords:
        directory, problems = self.view.build()
        current = frozenset(problems)
        for line in sorted(current - self._problems):
            log.warn("directory: {problem}", problem=line)
        self._problems = current
        releases = dict(directory.releases)
        for name in sorted(set(releases) | set(self._releases)):
            old, new = self._releases.get(name), releases.get(name)
            if old == new:
                continue
            verb = {None: "removed from the directory", "released": "published", "testing": "in testing",
                    "withdrawn": "withdrawn"}[new]
            log.info("directory: image {name} {verb}", name=name, verb=verb)
        self._releases = releases
        return directory

    def _pause_gc(self) -> None:
        if self._gc_paused or not gc.isenabled():
            return
        gc.disable()
        self._gc_paused = True
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor
        self._gc_timer = reactor.callLater(GC_PAUSE_MAX, self._resume_gc, False)

    def _resume_gc(self, freeze: bool) -> None:
        timer, self._gc_timer = self._gc_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._gc_paused:
            self._gc_paused = False
            if freeze:
                gc.freeze()
            gc.enable()

    def _state_changed(self, state: str, detail: str) -> None:
        if state == "refresh-required":            # everything comes again
            self._pause_gc()
        elif state == "disconnected":              # a refresh cut short: collect again
            self._resume_gc(freeze=False)
        self.connection, self.connection_detail, self.connection_since = state, detail, time.time()
        uri = self.config.uri
        if state == "disconnected":
            log.warn("directory: {uri} unavailable: {detail}; serving {devices} known devices",
                     uri=uri, detail=detail, devices=self.devices)
        elif state in ("save-failed", "refresh-required"):
            log.warn("directory: {detail}", detail=detail)
        elif state == "saved":
            log.info("directory: {detail}", detail=detail)
        else:
            log.info("directory: {uri}: {detail}", uri=uri, detail=detail)

    def status(self) -> dict:
        """For /status: the connection to the replica and what the model holds."""
        return {"source": "ldap", "uri": self.config.uri, "profile": self.profile.name,
                "connection": self.connection, "detail": self.connection_detail,
                "since": self.connection_since, "devices": self.devices, "last_change": self.last_change,
                "problems": len(self._problems),
                "replication": self.monitor.status() if self.monitor is not None else {"state": "not started"}}

    def lag_seconds(self) -> float:
        """For bootserverd_directory_lag_seconds: see ldapsync/replication.py."""
        return self.monitor.lag_seconds() if self.monitor is not None else 0.0


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds") if epoch else "?"
