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
        policy = Policy(max_blksize=config.max_blksize, max_windowsize=config.max_windowsize,
                        timeout=config.timeout, retries=config.retries)
        self.protocol = TFTPServerProtocol(
            self._open, policy, reactor, max_transfers=config.max_transfers,
            max_per_client=config.max_transfers_per_client, on_finish=self._finished)

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
            # BootFileError (bootserverd.bootfiles): kind "not-found" | "access-denied".
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
            (log.info if r.size is None else log.warn)("{line}", line=format_record(r), record=r)
        self.bytes_sent += r.bytes
        if self.on_transfer is not None:
            self.on_transfer(r)

    @property
    def active_transfers(self) -> int:
        return len(self.protocol.transfers)

    def startService(self) -> None:
        listen = self.config.listen
        self.port = self.reactor.listenUDP(listen.port, self.protocol, interface=listen.host)
        log.info("TFTP listening on {host}:{port}, root {root}", host=listen.host,
                 port=self.port.getHost().port, root=getattr(self.config, "root", "?"))
        super().startService()

    def stopService(self):
        super().stopService()
        self.protocol.abort_all()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
        return None
