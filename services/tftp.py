"""The TFTP listener as a Twisted service: config limits, BootFiles, one log line per transfer
(refusals rate-limited), metrics."""
from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from bootserverd.boot.stages import optional_file
from bootserverd.ops.metrics import Metrics
from bootserverd.ops.ratelimit import LogThrottle, suffix
from bootserverd.ops.transfers import Transfer, TransferLedger
from tftp import codec
from tftp.admission import FileUnavailable
from tftp.protocol import TFTPServerProtocol
from tftp.session import Policy, TransferRecord

log = Logger(namespace="bootserverd.tftp")

_KIND_CODE = {"not-found": codec.E_NOT_FOUND, "access-denied": codec.E_ACCESS}


def _policy(config) -> Policy:
    return Policy(max_blksize=config.max_blksize, max_windowsize=config.max_windowsize,
                  timeout=config.timeout, retries=config.retries)


class TFTPService(Service):
    name = "tftp"

    def __init__(self, config, boot_files, reactor=None,
                 on_transfer: Callable[[Transfer], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.config = config
        self.boot_files = boot_files
        self.reactor = reactor
        self.metrics = metrics if metrics is not None else Metrics()   # the app shares its registry
        self.ledger = TransferLedger("tftp", self.metrics, on_transfer)
        self.refusals_log = LogThrottle()
        self.port = None
        self.protocol = self._make_protocol(config)
        self._draining: list[TFTPServerProtocol] = []   # old listeners' transfers (SIGHUP)

    def _make_protocol(self, config) -> TFTPServerProtocol:
        return TFTPServerProtocol(
            self._open, _policy(config), self.reactor, max_transfers=config.max_transfers,
            max_per_client=config.max_transfers_per_client, on_finish=self._finished)

    def reconfigure(self, config) -> None:
        """SIGHUP: new limits and options apply to new transfers; running transfers keep
        theirs. A new listen address is opened before the old one closes."""
        old = self.config
        self.config = config
        p = self.protocol
        p.reconfigure(_policy(config), config.max_transfers, config.max_transfers_per_client)
        if config.listen != old.listen and self.port is not None:
            # A DatagramProtocol serves one port at a time: the new listener gets a fresh one;
            # transfers started on the old one finish there.
            new = self._make_protocol(config)
            port = self.reactor.listenUDP(config.listen.port, new, interface=config.listen.host)
            self.port.stopListening()
            self._draining = [d for d in self._draining if d.transfers] + \
                ([p] if p.transfers else [])
            self.port, self.protocol = port, new
            log.info("TFTP listening on {host}:{port} instead of {old}", host=config.listen.host,
                     port=port.getHost().port, old=str(old.listen))

    def status(self) -> dict:
        return {"active_transfers": self.active_transfers, "transfers": dict(self.ledger.outcomes),
                "transfers_ok": self.ledger.ok, "transfers_failed": self.ledger.failed(),
                "bytes_sent": self.ledger.bytes_sent, "rrq_dropped_busy": self.protocol.admission.refused_busy}

    def _open(self, path: str, client_ip: str):
        try:
            return self.boot_files.open(path, client_ip)
        except FileUnavailable:
            raise
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileUnavailable(codec.E_NOT_FOUND, "file not found") from None
        except PermissionError:
            raise FileUnavailable(codec.E_ACCESS, "access violation") from None
        except Exception as e:
            # BootFileError (bootserverd.boot.files): kind "not-found" | "access-denied".
            code = _KIND_CODE.get(getattr(e, "kind", None))
            if code is None:
                raise
            raise FileUnavailable(code, str(e)) from None

    def _finished(self, r: TransferRecord) -> None:
        self._log(r)
        self.ledger.add(r.as_transfer())

    def _log(self, r: TransferRecord) -> None:
        more = ""
        if r.size is None:      # refused before a transfer: a repeat is one line with a count
            hidden = self.refusals_log.admit((r.client, r.filename, r.outcome), self.reactor.seconds())
            if hidden is None:
                return
            more = suffix(hidden)
        if r.kind == "probe" or (r.size is None and optional_file(r.filename)):
            emit = log.debug        # routine on every UEFI boot: EDK2's tsize query, shim's and GRUB's probes
        else:
            emit = log.info if r.ok or r.size is None else log.warn
        emit("{line}{more}", line=r.line(), more=more, record=r)

    @property
    def active_transfers(self) -> int:
        return len(self.protocol.transfers) + sum(len(d.transfers) for d in self._draining)

    def startService(self) -> None:
        listen = self.config.listen
        self.port = self.reactor.listenUDP(listen.port, self.protocol, interface=listen.host)
        log.info("TFTP listening on {host}:{port}, root {root}", host=listen.host,
                 port=self.port.getHost().port, root=getattr(self.config, "root", "?"))
        super().startService()

    def stopService(self):
        super().stopService()
        for p in [*self._draining, self.protocol]:
            p.abort_all()
        self._draining = []
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
