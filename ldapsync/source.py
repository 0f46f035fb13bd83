"""``inventory.source: ldap``: the local LDAP replica as an InventorySource.

``load()`` never talks to LDAP: it serves the saved snapshot (possibly empty), so the
daemon starts, and boots clients, while the replica is down. ``start()`` runs the consumer
thread, which catches up from the saved cookie; each batch it hands over (in the reactor)
becomes one new ``Directory``. The app logs device/school/defaults changes; this module logs
the connection state, image release changes and entries it cannot use (once each).
"""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path
from typing import Callable

from twisted.logger import Logger

from bootserverd.config import LdapConfig
from bootserverd.model import Directory
from bootserverd.schema import Problem, SchemaError
from ldapsync import snapshot
from ldapsync.consumer import Consumer, Settings
from ldapsync.mapping import PROFILES, DirectoryView, Entry
from ldapsync.syncstate import Batch, Delete, Put, SyncState

log = Logger(namespace="ldapsync")


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
        self._deliver: Callable[[Directory], None] | None = None
        self._problems: frozenset[str] = frozenset()
        self._releases: dict[str, str] = {}
        self.connection = "not started"
        self.connection_detail = ""
        self.connection_since = time.time()
        self.devices = 0
        self.last_change: float | None = None
        self.snapshot_saved_at: float | None = None

    def _source_id(self) -> dict[str, str]:
        return {"uri": self.config.uri, "base": self.config.base, "profile": self.profile.name,
                "filter": self.profile.filter}

    def _read_password(self) -> str | None:
        path = self.config.password_file
        if path is None:
            return None
        try:
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise SchemaError([Problem(str(path), None, "inventory.ldap.password_file",
                                       f"cannot read: {exc.strerror}")]) from None

    def load(self) -> Directory:
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

    def start(self, deliver: Callable[[Directory], None]) -> None:
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
        self._consumer.start()

    def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.stop()
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
        for op, record in zip(batch.ops, records):
            if isinstance(op, Delete):
                self.view.delete(op.uuid)
            else:
                self.view.put_record(op.uuid, record)
        if not batch.ops:
            return                              # a new cookie only: the model is unchanged
        directory = self._build()
        self.devices = len(directory.devices)
        self.last_change = time.time()
        if self._deliver is not None:
            self._deliver(directory)

    def _build(self) -> Directory:
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

    def _state_changed(self, state: str, detail: str) -> None:
        self.connection, self.connection_detail, self.connection_since = state, detail, time.time()
        uri = self.config.uri
        if state == "disconnected":
            log.warn("directory: {uri} unavailable: {detail}; serving {devices} known devices",
                     uri=uri, detail=detail, devices=self.devices)
        elif state in ("save-failed", "refresh-required"):
            log.warn("directory: {detail}", detail=detail)
        else:
            log.info("directory: {uri}: {detail}", uri=uri, detail=detail)

    def status(self) -> dict:
        """For /status: the connection to the replica and what the model holds."""
        return {"source": "ldap", "uri": self.config.uri, "profile": self.profile.name,
                "connection": self.connection, "detail": self.connection_detail,
                "since": self.connection_since, "devices": self.devices, "last_change": self.last_change,
                "problems": len(self._problems)}


def _when(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).isoformat(sep=" ", timespec="seconds") if epoch else "?"
