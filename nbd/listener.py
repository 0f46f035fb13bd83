"""Twisted adapter, the listening side: admits connections (admission.py decides), keeps the
open ones, opens export files for the catalog, and reports counts and finished sessions."""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.internet.protocol import Factory
from twisted.logger import Logger

from bootserverd.ops.ratelimit import suffix

from .admission import Admission
from .exports import Catalog, ExportInfo, OpenExport
from .protocol import NBDServerProtocol
from .sendpool import SendPool
from .transmission import SessionRecord

log = Logger(namespace="bootserverd.nbd")


def open_export(info: ExportInfo, path) -> OpenExport | None:
    """The catalog's opener; the connection closes the descriptor when it ends."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:   # retired between the store's scan and now: the client hears "unknown export"
        log.warn("NBD cannot open image {name!r} ({path}): {error}", name=info.name, path=str(path),
                 error=e.strerror)
        return None
    st = os.fstat(fd)
    return OpenExport(info.name, st.st_size, info.description, fd=fd, file=file_id(st))


def file_id(st: os.stat_result) -> str:
    """An open file's identity: one image file is one id, however many times it is opened."""
    return f"{st.st_dev}-{st.st_ino}"


def _ignore(_value) -> None:
    pass


class NBDFactory(Factory):
    """Admits connections (admission.Admission) and keeps the open ones; reports to its owner:
    on_count(open connections), on_session(SessionRecord), on_attach(connection) when one enters
    transmission and on_close(connection) when it ends (the fd store keeps it meanwhile). Payload bytes are plain ints on each
    connection, summed by ``bytes_sent()`` when someone asks (no per-request bookkeeping)."""

    noisy = False

    def __init__(self, catalog: Catalog, clock, admission: Admission, handshake_timeout: float = 10.0,
                 on_session: Callable[[SessionRecord], None] = _ignore,
                 on_count: Callable[[int], None] = _ignore,
                 on_attach: Callable[[NBDServerProtocol], None] = _ignore,
                 on_close: Callable[[NBDServerProtocol], None] = _ignore,
                 send_pool: SendPool | None = None) -> None:
        """``send_pool``: the threads that send what the reactor should not wait for (None:
        the reactor sends everything)."""
        self.catalog, self.clock, self.admission = catalog, clock, admission
        self.send_pool = send_pool
        self.handshake_timeout = handshake_timeout
        self.on_session, self.on_count = on_session, on_count
        self.on_attach, self.on_close = on_attach, on_close
        self.connections: set[NBDServerProtocol] = set()
        self.finished_bytes = 0          # payload of the connections that have ended

    def bytes_sent(self) -> int:
        """Payload bytes sent since start, ended and open connections together (monotonic)."""
        return self.finished_bytes + sum(p.bytes_sent for p in self.connections)

    def buildProtocol(self, addr):
        host = getattr(addr, "host", str(addr))
        refused = self.admission.decide(host, len(self.connections), self.clock.seconds())
        if refused is not None:
            if refused.log:
                log.warn("NBD refused {client}: {why} ({key}){more}", client=host, why=refused.why,
                         key=refused.limit, more=suffix(refused.hidden))
            return None
        return self.add(NBDServerProtocol(self, host, getattr(addr, "port", 0)))

    def add(self, p: NBDServerProtocol) -> NBDServerProtocol:
        """Count ``p`` as open: a connection accepted here, or one adopted after a restart."""
        self.connections.add(p)
        self.admission.begin(p.host)
        self.on_count(len(self.connections))
        return p

    def attached(self, p: NBDServerProtocol) -> None:
        try:
            self.on_attach(p)
        except Exception:
            log.failure("NBD on_attach callback failed")

    def connection_ended(self, proto: NBDServerProtocol, record: SessionRecord) -> None:
        if proto in self.connections:
            self.connections.discard(proto)
            self.finished_bytes += proto.bytes_sent
            self.admission.end(proto.host)
            self.on_count(len(self.connections))
        try:
            self.on_close(proto)
            self.on_session(record)
        except Exception:
            log.failure("NBD on_session callback failed")

    def close_all(self) -> None:
        for p in list(self.connections):
            p.reason = "server shutting down"
            p.transport.abortConnection()
