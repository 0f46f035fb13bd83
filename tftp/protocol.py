"""Twisted adapter, the listening side: the port RRQs arrive on, one ephemeral socket per
admitted transfer (transfer.py moves that transfer's bytes), the finished-transfer hook.

It only does I/O. The decisions are beside it, pure: admission.py (which datagrams start a
transfer, the limits, the netascii view), session.py (one transfer, its record).
"""
from __future__ import annotations

import socket
from typing import Callable

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from bootserverd.ops.ratelimit import LogThrottle, suffix

from . import codec
from .admission import Admission, Admit, FileUnavailable, Refuse
from .session import Finish, Policy, ReadSession, TransferRecord
from .transfer import Transfer

log = Logger(namespace="bootserverd.tftp")


class TFTPServerProtocol(DatagramProtocol):
    """The listening port. `open_file(path, client_ip)` returns an object with `.size`,
    `.read(offset, length)` and `.close()`, or raises FileUnavailable."""

    noisy = False

    def __init__(self, open_file: Callable, policy: Policy = Policy(), reactor=None,
                 max_transfers: int = 256, max_per_client: int = 8,
                 on_finish: Callable[[TransferRecord], None] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.open_file, self.policy, self.reactor, self.on_finish = open_file, policy, reactor, on_finish
        self.admission = Admission(max_transfers, max_per_client)
        self.transfers: dict = {}       # Admit.key -> Transfer
        self.throttle = LogThrottle()

    def reconfigure(self, policy: Policy, max_transfers: int, max_per_client: int) -> None:
        """New limits and options for new transfers; running ones keep theirs."""
        self.policy = policy
        self.admission.max_transfers, self.admission.max_per_client = max_transfers, max_per_client

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            verdict = self.admission.decide(data, addr, self.transfers)
            if type(verdict) is Admit:
                self._start(verdict, addr)
            elif type(verdict) is Refuse:
                self._refuse(addr, verdict)
            elif verdict.reason:
                self._note(log.debug, addr, verdict.reason)
        except Exception:
            log.failure("tftp {peer}: internal error handling a request", peer=addr)
            self.transport.write(codec.encode_error(codec.E_UNDEFINED, "internal error"), addr)

    def _start(self, admit: Admit, addr) -> None:
        req = admit.request
        try:
            f = self.open_file(req.filename, addr[0])
        except FileUnavailable as e:
            return self._refuse(addr, Refuse(e.code, e.message, req))
        try:
            view = self.admission.view(req, f, self.policy)
            if type(view) is Refuse:
                f.close()
                return self._refuse(addr, view)
            session = ReadSession(req, view.size, self.policy)
            local = self.transport.getHost().host
            sock = socket.socket(socket.AF_INET6 if ":" in local else socket.AF_INET, socket.SOCK_DGRAM)
        except Exception:
            f.close()
            raise
        try:
            sock.setblocking(False)
            sock.bind((local, 0))   # the listener's address: replies come from where the RRQ went
        except Exception:
            sock.close()
            view.close()
            raise
        self.transfers[admit.key] = tr = Transfer(self, admit.key, addr, view, session, sock)
        self.admission.begin(addr[0])
        tr.begin()

    def _refuse(self, addr, refusal: Refuse) -> None:
        self.transport.write(codec.encode_error(refusal.code, refusal.message), addr)
        if refusal.malformed is not None:
            self._note(log.info, addr, "malformed packet", f": {refusal.malformed}")
        if refusal.request is not None:
            self._report(TransferRecord.refused(addr, refusal.request, refusal.message))

    def _note(self, emit, addr, what: str, detail: str = "") -> None:
        """One line per client and `what` a minute; the next says how many were hidden."""
        hidden = self.throttle.admit((addr[0], what), self.reactor.seconds())
        if hidden is not None:
            emit("tftp {host}:{port}: {what}{detail}{more}", host=addr[0], port=addr[1], what=what,
                 detail=detail, more=suffix(hidden))

    def transfer_done(self, tr: Transfer, fin: Finish) -> None:
        """Called by a Transfer when it has closed its socket."""
        del self.transfers[tr.key]
        self.admission.end(tr.peer[0])
        self._report(tr.session.record(tr.peer, self.reactor.seconds() - tr.started, fin))

    def _report(self, record: TransferRecord) -> None:
        if self.on_finish is not None:
            try:
                self.on_finish(record)
            except Exception:
                log.failure("tftp: transfer hook failed")

    def abort_all(self, message: str = "server shutting down") -> None:
        for tr in list(self.transfers.values()):
            tr.abort(message)
