"""The TFTP listener as a Twisted service: config limits, BootFiles, one log line per transfer."""
from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from tftp import codec
from tftp.protocol import FileUnavailable, TFTPServerProtocol, TransferRecord
from tftp.session import Policy

log = Logger(namespace="bootserverd.tftp")

_KIND_CODE = {"not-found": codec.E_NOT_FOUND, "access-denied": codec.E_ACCESS}


def _policy(config) -> Policy:
    return Policy(max_blksize=config.max_blksize, max_windowsize=config.max_windowsize,
                  timeout=config.timeout, retries=config.retries)


def format_record(r: TransferRecord) -> str:
    opts = " ".join(f"{k}={v}" for k, v in r.options) or "no options"
    return (f"TFTP {r.client}:{r.port} {r.filename!r} ({r.mode}): {r.bytes} bytes in "
            f"{r.seconds:.3f} s ({r.mbps:.1f} MB/s) blksize={r.blksize} windowsize={r.windowsize}"
            f" [{opts}] retransmissions={r.retransmissions}: {r.outcome}")


class TFTPService(Service):
    name = "tftp"

    def __init__(self, config, boot_files, reactor=None,
                 on_transfer: Callable[[TransferRecord], None] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.config = config
        self.boot_files = boot_files
        self.reactor = reactor
        self.on_transfer = on_transfer
        self.port = None
        self.transfers_ok = 0
        self.transfers_failed = 0
        self.bytes_sent = 0
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
        p.policy = _policy(config)
        p.max_transfers = config.max_transfers
        p.max_per_client = config.max_transfers_per_client
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
        return {"active_transfers": self.active_transfers, "transfers_ok": self.transfers_ok,
                "transfers_failed": self.transfers_failed, "bytes_sent": self.bytes_sent,
                "rrq_dropped_busy": self.protocol.refused_busy}

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
        if r.ok:
            self.transfers_ok += 1
            log.info("{line}", line=format_record(r), record=r)
        else:
            self.transfers_failed += 1
            # UEFI (EDK2) asks for tsize, then ends with error 8 before downloading for real:
            # a size probe, not a failure a sysadmin should chase.
            probe = r.outcome.startswith("client refused the options")
            (log.info if r.size is None or probe else log.warn)("{line}", line=format_record(r), record=r)
        self.bytes_sent += r.bytes
        if self.on_transfer is not None:
            self.on_transfer(r)

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
