"""The trace files' I/O (nbd/trace.py is the pure part): ``Tracing`` starts a Recorder on the
sessions the policy picks and writes it, off the reactor, when the session ends; ``write`` keeps
only the newest ``keep`` files; ``listing`` and ``read`` serve the ``bootserverd trace`` command.

Cost when nothing is traced: one attribute test per batch of requests (``p.trace is None`` in
nbd/protocol.py) and one ``enabled`` test per session."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from twisted.logger import Logger

from .trace import SUFFIX, ImageSessions, Recorder, Trace, TracePolicy, TraceRules, parse, to_prune

log = Logger(namespace="bootserverd.nbd")


def rules_of(config) -> TraceRules:
    """TraceRules from the config's nbd.trace section (bootserverd.config.settings.NbdTraceConfig)."""
    return TraceRules(frozenset(config.devices), tuple(ImageSessions(i.image, i.sessions) for i in config.images),
                      config.max_requests, config.keep_files, config.max_seconds)


class Tracing:
    """The NBD service's recorder of sessions: ``attach`` when a session enters transmission,
    ``finish`` when it ends. ``mac_of(ip)``: the MAC the DHCP side last leased that IP to."""

    def __init__(self, rules: TraceRules, directory: Path | None, reactor,
                 mac_of: Callable[[str], str | None] | None = None, wall: Callable[[], float] = time.time) -> None:
        self.policy = TracePolicy(rules)
        self.directory, self.reactor, self.mac_of, self.wall = directory, reactor, mac_of, wall
        self.written: list[Path] = []          # this process's files, newest last (tests, status)
        self._cuts: dict = {}                  # connection → its max_seconds timer

    def reconfigure(self, rules: TraceRules) -> None:
        self.policy.reconfigure(rules)

    def attach(self, p) -> None:
        if self.directory is None or not self.policy.rules.enabled:
            return
        mac = self.mac_of(p.host) if self.mac_of is not None else None
        why = self.policy.decide(p.host, mac, p.export.name)
        if why is None:
            return
        started = self.wall() - (self.reactor.seconds() - p.started)
        p.trace = Recorder(p.export.name, p.client, started, mac=mac, reason=why,
                           max_requests=self.policy.rules.max_requests)
        seconds = self.policy.rules.max_seconds
        self._cuts[p] = self.reactor.callLater(seconds, self._write, p, f"still open after max_seconds {seconds:g}")
        log.info("NBD {client} on export {export!r}: recording its requests ({why})", client=p.client,
                 export=p.export.name, why=why)

    def finish(self, p) -> None:
        """The session ended: its trace is written (off the reactor)."""
        self._write(p, "session closed")

    def stop(self, connections) -> None:
        """The service stops: the traces of sessions still open are written now (before the
        reactor's threads go), with what they hold."""
        for p in list(connections):
            recorder = self._take(p, "daemon stopped while the session was open")
            if recorder is not None:
                try:
                    self._done(recorder, write(self.directory, recorder, self.policy.rules.keep_files))
                except OSError as e:
                    log.warn("NBD trace of {client} not written to {dir}: {error}", client=recorder.client,
                             dir=str(self.directory), error=e.strerror)

    def _take(self, p, ended: str) -> Recorder | None:
        cut = self._cuts.pop(p, None)
        if cut is not None and cut.active():
            cut.cancel()
        recorder = getattr(p, "trace", None)
        if recorder is not None:
            p.trace = None
            recorder.ended = ended
        return recorder

    def _done(self, recorder: Recorder, path: Path) -> None:
        self.written.append(path)
        log.info("NBD trace of {client} on export {export!r} written: {path} ({n} requests{more}; {ended})",
                 client=recorder.client, export=recorder.image, path=str(path), n=len(recorder.rows),
                 more=f", {recorder.dropped} more not recorded" if recorder.dropped else "", ended=recorder.ended)

    def _write(self, p, ended: str) -> None:
        recorder = self._take(p, ended)
        if recorder is None:
            return
        from twisted.internet.threads import deferToThreadPool
        d = deferToThreadPool(self.reactor, self.reactor.getThreadPool(), write, self.directory, recorder,
                              self.policy.rules.keep_files)

        def failed(f) -> None:
            log.warn("NBD trace of {client} not written to {dir}: {error}", client=recorder.client,
                     dir=str(self.directory), error=f.getErrorMessage())
        d.addCallbacks(lambda path: self._done(recorder, path), failed)


def write(directory: Path, recorder: Recorder, keep: int) -> Path:
    """Write ``recorder`` under ``directory`` (made if missing; temp file + rename) and remove
    the oldest traces beyond ``keep``. Returns the path written."""
    directory = Path(directory)
    directory.mkdir(mode=0o750, parents=True, exist_ok=True)
    path = directory / recorder.file_name()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.writelines(recorder.lines())
    os.replace(tmp, path)
    for name in to_prune(os.listdir(directory), keep):
        try:
            (directory / name).unlink()
        except FileNotFoundError:
            pass
    return path


def listing(directory: Path) -> list[Path]:
    """The trace files, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIX) and not p.name.startswith("."))


def read(path: Path) -> Trace:
    return parse(Path(path).read_text(encoding="utf-8"))
