"""The NBD listener: every published image is an export, by name, on one port.

The export list is read from the image store at each request (LIST, INFO, GO; nbd.exports),
so a new image is exportable at once and nothing is ever reloaded: the service subscribes
to nothing. It counts into the daemon's metrics (open connections, payload bytes, finished
sessions by outcome) and tells the app its live sessions and its status.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from bootserverd.boot.report import LiveSession
from bootserverd.config.settings import NbdConfig
from bootserverd.ops.metrics import Metrics
from bootserverd.ops.transfers import Transfer, TransferLedger
from nbd.admission import Admission
from nbd.exports import ExportCatalog, Images
from nbd.listener import NBDFactory, open_export
from nbd.transmission import SessionRecord

log = Logger(namespace="bootserverd.nbd")
# A classroom connects at once; a short accept queue turns that into SYN retries of 1 s, 3 s, ...
LISTEN_BACKLOG = 511


class NBDService(Service):
    name = "nbd"

    def __init__(self, config: NbdConfig, images: Images, reactor=None,
                 on_transfer: Callable[[Transfer], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.metrics = metrics
        # bytes reach the metrics per scrape, as they are sent (_count_sent), not per session
        self.ledger = TransferLedger("nbd", metrics, on_transfer, count_bytes=False)
        counters = {"on_count": metrics.nbd_connections.set} if metrics is not None else {}
        self.factory = NBDFactory(
            ExportCatalog(images, open_export), reactor,
            Admission(config.max_connections, config.max_connections_per_client),
            handshake_timeout=config.handshake_timeout, on_session=self._session_ended, **counters)
        self.port = None
        self._counted = 0                # payload bytes already added to the metrics counter
        self._unsubscribe = None

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
        self.port = self.reactor.listenTCP(listen.port, self.factory, backlog=LISTEN_BACKLOG,
                                           interface=listen.host)
        log.info("NBD listening on {host}:{port}", host=listen.host,
                 port=self.port.getHost().port)

    def reconfigure(self, config: NbdConfig) -> None:
        """SIGHUP: new limits apply to new connections; a new listen address is opened before
        the old one closes. Connected clients keep their sessions either way."""
        self.factory.handshake_timeout = config.handshake_timeout
        self.factory.admission.max_connections = config.max_connections
        self.factory.admission.max_per_client = config.max_connections_per_client
        old_listen, self.config = self.config.listen, config
        if config.listen != old_listen and self.port is not None:
            old_port = self.port
            self.port = self.reactor.listenTCP(config.listen.port, self.factory, backlog=LISTEN_BACKLOG,
                                               interface=config.listen.host)
            old_port.stopListening()
            log.info("NBD listening on {listen} instead of {old}", listen=str(config.listen),
                     old=str(old_listen))

    def stopService(self):
        super().stopService()
        self.factory.close_all()
        if self._unsubscribe is not None:
            self._count_sent()
            self._unsubscribe()
            self._unsubscribe = None
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
