"""The NBD listener: every published image is an export, by name, on one port.

The export list is read from the image store at each request (LIST, INFO, GO; nbd.exports),
so a new image is exportable at once and nothing is ever reloaded: the service subscribes
to nothing. It counts into the daemon's metrics (open connections, payload bytes, finished
sessions by outcome) and tells the app its live sessions and its status.

Under systemd (FileDescriptorStoreMax=) connections outlive the process: the listening socket,
each connection in transmission (its socket and its ``SessionState``) and, once, each image
file they read are kept in the service's fd store; a stop for a restart (``keep_connections``)
stops reading, lets queued answers reach the sockets, adds each connection's ``Handover`` and
exits without closing them; the next start adopts the listener and the connections. Clients see
a pause.
"""

from __future__ import annotations

import mmap
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bootserverd.boot.report import LiveSession
from bootserverd.config.settings import NbdConfig
from bootserverd.ops import sdnotify
from bootserverd.ops.metrics import Metrics
from bootserverd.ops.transfers import Transfer, TransferLedger
from nbd.admission import Admission
from nbd.exports import ExportCatalog, Images, OpenExport
from nbd import inflight as inflight_log
from nbd import keeper
from nbd import tcpstate
from nbd.handover import (BadState, Handover, KeptFiles, Resumed, SessionState, decode, file_group, group_name,
                          is_connection_group, is_file_group)
from nbd.listener import NBDFactory, file_id, open_export
from nbd.protocol import NBDServerProtocol
from nbd.sendpool import SendPool
from nbd.tracefile import Tracing, rules_of
from nbd.transmission import SessionRecord, Transmission

log = Logger(namespace="bootserverd.nbd")
# A classroom connects at once; a short accept queue turns that into SYN retries of 1 s, 3 s, ...
LISTEN_BACKLOG = 511
LISTENER_FDNAME = "nbd-listen"
DRAIN_SECONDS = 2.0      # a restart waits this long for answers already queued (SIGTERM must end us in 5 s)


class NBDService(Service):
    name = "nbd"

    def __init__(self, config: NbdConfig, images: Images, reactor=None,
                 on_transfer: Callable[[Transfer], None] | None = None,
                 metrics: Metrics | None = None, inherited: dict[str, list[int]] | None = None,
                 trace_dir: Path | None = None, mac_of: Callable[[str], str | None] | None = None) -> None:
        """``inherited``: the fds systemd handed back to this process (ops.sdnotify.inherited_fds);
        the service adopts those named ``nbd-…`` and closes the rest of them it was given.
        ``trace_dir``: where recorded sessions go (nbd.trace; None: nothing is recorded);
        ``mac_of(ip)``: the MAC leased that IP, for nbd.trace.devices given as MACs."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.metrics = metrics
        # bytes reach the metrics per scrape, as they are sent (_count_sent), not per session
        self.ledger = TransferLedger("nbd", metrics, on_transfer, count_bytes=False)
        counters = {"on_count": metrics.nbd_connections.set} if metrics is not None else {}
        self.send_pool = SendPool(reactor, config.send_threads)
        self.factory = NBDFactory(
            ExportCatalog(images, open_export), reactor,
            Admission(config.max_connections, config.max_connections_per_client),
            handshake_timeout=config.handshake_timeout, on_session=self._session_ended,
            on_attach=self._attached, on_close=self._closed, send_pool=self.send_pool, **counters)
        self.fd_store = sdnotify.available()
        self.inherited = dict(inherited or {})
        self.keep_connections = False    # set by the app when the process stops (not on SIGHUP)
        self.files = KeptFiles()
        self._serial = 0
        self.port = None
        self._counted = 0                # payload bytes already added to the metrics counter
        self._unsubscribe = None
        self.tracing = Tracing(rules_of(config.trace), trace_dir, reactor, mac_of)

    def _count_sent(self) -> None:
        """Before a scrape: add what was sent since the last one to bootserverd_sent_bytes."""
        total = self.factory.bytes_sent()
        self.metrics.bytes_sent.labels(service="nbd").inc(total - self._counted)
        self._counted = total

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) actually bound; port 0 in the config picks a free one (tests)."""
        if self.port is None:
            return None
        h = self.port.getHost()
        return h.host, h.port

    def live_sessions(self) -> list[LiveSession]:
        """The connections attached to an export now (the boot report's timeline)."""
        return [LiveSession(p.host, p.export.name, p.started, p.bytes_sent)
                for p in self.factory.connections if p.export is not None]

    def status(self) -> dict[str, int]:
        return {"connections": len(self.factory.connections), "sessions": dict(self.ledger.outcomes),
                "refused": self.factory.admission.refused}

    def _session_ended(self, record: SessionRecord) -> None:
        self.ledger.add(record.as_transfer())

    def startService(self) -> None:
        super().startService()
        if self.metrics is not None:
            self._unsubscribe = self.metrics.before_scrape(self._count_sent)
        if not self.config.enabled:
            return
        listen = self.config.listen
        self.send_pool.start()
        self.port = self._listen(listen)
        log.info("NBD listening on {host}:{port}", host=listen.host,
                 port=self.port.getHost().port)
        self._adopt_connections()

    def reconfigure(self, config: NbdConfig) -> None:
        """SIGHUP: new limits apply to new connections; a new listen address is opened before
        the old one closes. Connected clients keep their sessions either way."""
        self.factory.handshake_timeout = config.handshake_timeout
        self.factory.admission.max_connections = config.max_connections
        self.factory.admission.max_per_client = config.max_connections_per_client
        if self.port is not None:                 # serving: the threads follow the new count
            self.send_pool.resize(config.send_threads)
        self.tracing.reconfigure(rules_of(config.trace))
        old_listen, self.config = self.config.listen, config
        if config.listen != old_listen and self.port is not None:
            old_port = self.port
            self.port = self._listen(config.listen)
            old_port.stopListening()
            log.info("NBD listening on {listen} instead of {old}", listen=str(config.listen),
                     old=str(old_listen))

    def stopService(self):
        super().stopService()
        self.tracing.stop(self.factory.connections)     # open sessions' traces, written now
        handing_over = None
        if self.keep_connections and self.fd_store:
            handing_over = self._hand_over()
        else:
            self.factory.close_all()
        if self._unsubscribe is not None:
            self._count_sent()
            self._unsubscribe()
            self._unsubscribe = None
        if self.port is not None:
            port, self.port = self.port, None
            port.stopListening()      # an adopted listener is only closed here: the store keeps it
        if handing_over is None:
            self.send_pool.stop(wait=False)   # its threads end after the ranges queued, at exit
        else:
            handing_over.addBoth(self._stop_pool)
        return handing_over

    def _stop_pool(self, result):
        self.send_pool.stop(wait=False)
        return result

    # -- the fd store ----------------------------------------------------------------------
    def _listen(self, listen):
        """Without the fd store: Twisted's listenTCP. With it: our own listening socket (or the
        one the previous process stored, if it is bound where the config says), adopted by the
        reactor so that closing it never shuts it down for the copy in the store."""
        if not self.fd_store:
            return self.reactor.listenTCP(listen.port, self.factory, backlog=LISTEN_BACKLOG,
                                          interface=listen.host)
        sock = None
        for fd in self.inherited.pop(LISTENER_FDNAME, []):
            candidate = socket.socket(fileno=fd)
            if sock is None and _bound_to(candidate, listen.host, listen.port):
                sock = candidate
                log.info("NBD kept its listening socket across the restart")
            else:
                candidate.close()
        sdnotify.remove_fds(LISTENER_FDNAME)        # the old address's, or a copy of the one kept
        if sock is None:
            sock = _listening_socket(listen.host, listen.port)
        sock.setblocking(False)        # the reactor's accept loop must never block (shared by the dup)
        try:
            port = self.reactor.adoptStreamPort(sock.fileno(), sock.family, self.factory)
            sdnotify.store_fds(LISTENER_FDNAME, [sock.fileno()])
        finally:
            sock.close()
        return port

    def _attached(self, p: NBDServerProtocol) -> None:
        """A connection entered transmission: keep it (and its image file) in the store."""
        self.tracing.attach(p)
        if not self.fd_store:
            return
        self._serial += 1
        self._keep(group_name(self._serial, os.getpid()), p)

    def _keep(self, name: str, p: NBDServerProtocol) -> None:
        """Store ``p`` as ``name``: its socket and state, and its image file unless another kept
        connection's is there. ``p.fd_group`` is set when kept: then it holds a read of the file."""
        file = p.export.file
        if self.files.hold(file) and not sdnotify.store_fds(file_group(file), [p.export.fd]):
            self.files.release(file)
            return
        if self._store(name, p, keeper.session_state(p), inflight=True):
            p.fd_group = name
        elif self.files.release(file):
            sdnotify.remove_fds(file_group(file))

    @staticmethod
    def _store(name: str, p: NBDServerProtocol, state: SessionState, handover: Handover | None = None,
               inflight: bool = False) -> bool:
        """``inflight``: also a log of the requests read and not yet answered (nbd.inflight),
        which the connection keeps writing for as long as it lives."""
        memfds: list[int] = []
        try:
            memfds.append(_memfd(state.encode()))
            if handover is not None:
                memfds.append(_memfd(handover.encode()))
            if inflight:
                memfds.append(_memfd(b"", size=inflight_log.SIZE))
                keeper.keep_inflight(p, mmap.mmap(memfds[-1], inflight_log.SIZE))
            return sdnotify.store_fds(name, [p.transport.fileno(), *memfds])
        except OSError as e:     # memfd_create refused (a seccomp filter): served on, not kept
            log.warn("NBD {client}: cannot keep the connection for a restart: {error}", client=p.client,
                     error=e.strerror)
            return False
        finally:
            for fd in memfds:
                os.close(fd)

    def _closed(self, p: NBDServerProtocol) -> None:
        self.tracing.finish(p)
        if p.fd_group is not None:
            sdnotify.remove_fds(p.fd_group)   # else the store's copy keeps the client connected
            if self.files.release(p.export.file):
                sdnotify.remove_fds(file_group(p.export.file))

    def _adopt_connections(self) -> None:
        files: dict[str, int] = {}            # the image files kept, by identity
        for name in [n for n in self.inherited if is_file_group(n)]:
            for fd in self.inherited.pop(name):
                st = os.fstat(fd)
                if stat.S_ISREG(st.st_mode) and file_id(st) not in files:
                    files[file_id(st)] = fd
                    self.files.inherited(file_id(st))
                else:
                    os.close(fd)
        adopted = 0
        for name in list(self.inherited):
            fds = self.inherited.pop(name)
            if not is_connection_group(name):
                for fd in fds:
                    os.close(fd)
                sdnotify.remove_fds(name)
                continue
            try:
                adopted += self._adopt(name, fds, files)   # owns fds from here: closes what it does not keep
            except Exception:                               # one bad entry must not stop the start
                log.failure("NBD stored connection {name} not resumed", name=name)
                sdnotify.remove_fds(name)
        for fd in files.values():
            os.close(fd)                       # each connection has its own dup; the store keeps the file
        for file in self.files.prune():
            sdnotify.remove_fds(file_group(file))
        if adopted:
            log.info("NBD resumed {n} connections kept across the restart", n=adopted)

    def _adopt(self, name: str, fds: list[int], files: dict[str, int]) -> bool:
        """One stored connection back in the reactor, or False (its fds are then closed). Its image
        file is the one kept apart (``files``), or in its own group if an older version stored it."""
        sock = export_fd = state = handover = inflight = None
        for fd in fds:
            mode = os.fstat(fd).st_mode
            if stat.S_ISSOCK(mode) and sock is None:
                sock = socket.socket(fileno=fd)
            elif _is_memfd(fd):
                try:
                    head = os.pread(fd, 1 << 16, 0)
                    kept = (inflight_log.read(mmap.mmap(fd, inflight_log.SIZE, prot=mmap.PROT_READ))
                            if inflight_log.is_log(head) else decode(head))
                except (BadState, inflight_log.BadLog, OSError, ValueError) as e:
                    log.warn("NBD stored connection {name}: {error}", name=name, error=e)
                    kept = None
                os.close(fd)
                state = kept if isinstance(kept, SessionState) else state
                handover = kept if isinstance(kept, Handover) else handover
                inflight = kept if isinstance(kept, inflight_log.LogState) else inflight
            elif stat.S_ISREG(mode) and export_fd is None:
                export_fd = fd
            else:
                os.close(fd)
        sdnotify.remove_fds(name)                # a stale handover must not outlive this process
        if export_fd is None and state is not None and state.file in files:
            export_fd = os.dup(files[state.file])
        try:
            host, port = sock.getpeername()[:2] if sock is not None else (None, None)
        except OSError:
            host = None                          # the client left while we were away (a reset)
        if host is None or export_fd is None or state is None:
            log.info("NBD stored connection {name} not resumed: {why}", name=name,
                     why="the client is gone" if sock is not None and host is None else "incomplete in the store")
            if sock is not None:
                sock.close()
            if export_fd is not None:
                os.close(export_fd)
            return False
        st = os.fstat(export_fd)
        export = OpenExport(state.export, st.st_size, state.description, fd=export_fd, file=file_id(st))
        resumed = self._resumption(name, sock, export, state, handover, inflight)
        if resumed is None:
            sock.close()
            os.close(export_fd)
            return False
        p = NBDServerProtocol(self.factory, host, port, resumed)
        self.factory.add(p)
        sock.setblocking(False)
        try:
            self.reactor.adoptStreamConnection(sock.fileno(), sock.family, _Adopted(p))
        finally:
            sock.close()
        p.fd_group = None                        # kept again below, under this process's name
        self._serial += 1
        self._keep(group_name(self._serial, os.getpid()), p)
        return True

    @staticmethod
    def _resumption(name: str, sock: socket.socket, export: OpenExport, state: SessionState,
                    handover: Handover | None, inflight: inflight_log.LogState | None) -> Resumed | None:
        """How to go on with a stored connection: where its streams are, and after a crash the
        answers the dead process owed (None, logged: it cannot be resumed without losing one)."""
        try:
            consumed, written = tcpstate.stream_positions(sock)
        except OSError as e:
            log.info("NBD stored connection {name} not resumed: {error}", name=name, error=e)
            return None
        replay = None
        if handover is None and inflight is not None:
            replay = inflight_log.plan(inflight, consumed, written,
                                       Transmission(export.size, state.structured, state.contexts))
            if isinstance(replay, str):
                log.warn("NBD {client} not resumed after the crash: {why}", client=state.client, why=replay)
                return None
        return Resumed(export, state, handover, name, consumed, written, replay)

    def _hand_over(self) -> defer.Deferred:
        """Stop reading, wait (bounded) for queued answers to reach the sockets, then leave every
        connection in transmission to the next process; the others are closed."""
        kept = [p for p in self.factory.connections if p.fd_group is not None and not p.closing]
        for p in list(self.factory.connections):
            if p not in kept:
                p.reason = "server shutting down"
                p.transport.abortConnection()
        for p in kept:
            p.answers.quiesce()
        done = defer.Deferred()
        deadline = self.reactor.seconds() + DRAIN_SECONDS

        def check():
            if all(p.answers.drained or p.closing for p in kept) or self.reactor.seconds() >= deadline:
                poll.stop()
                handed = sum(self._detach(p) for p in kept)
                log.info("NBD left {n} connections to the next start (systemd fd store)", n=handed)
                done.callback(None)

        poll = LoopingCall(check)
        poll.clock = self.reactor
        poll.start(0.01, now=True)
        return done

    def _detach(self, p: NBDServerProtocol) -> int:
        if p.closing:
            return 0
        if not p.answers.drained:
            p.reason = f"answers not sent within {DRAIN_SECONDS:g} s of the stop"
            p.transport.abortConnection()
            return 0
        state = keeper.session_state(p)
        handover = keeper.detach(p)
        if handover.buffered or handover.skip:
            self._store(p.fd_group, p, state, handover)
        return 1


class _Adopted(Factory):
    """adoptStreamConnection asks a factory for the protocol: this one is already built."""

    def __init__(self, protocol: NBDServerProtocol) -> None:
        self.protocol_instance = protocol

    def buildProtocol(self, addr):
        return self.protocol_instance


def _memfd(data: bytes, size: int = 0) -> int:
    fd = os.memfd_create("bootserverd-nbd", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        if size:
            os.ftruncate(fd, size)
    except OSError:
        os.close(fd)
        raise
    return fd


def _is_memfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")
    except OSError:
        return False


def _listening_socket(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _bound_to(sock: socket.socket, host: str, port: int) -> bool:
    """Whether a kept listening socket is where the config says (port 0: any port)."""
    try:
        here = sock.getsockname()[:2]
        wanted = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][4][:2]
    except OSError:
        return False
    return here[0] == wanted[0] and (port == 0 or here[1] == wanted[1])
