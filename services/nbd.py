"""The NBD listener: every published image is an export, by name, on one port.

The export list is read from the image store at each request (LIST, INFO, GO), so a
new image is exportable at once and nothing is ever reloaded.
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.application.service import Service
from twisted.logger import Logger

from nbd.protocol import ExportInfo, NBDFactory, OpenExport, SessionRecord

log = Logger(namespace="bootserverd.nbd")


def _description(image) -> str:
    parts = [getattr(image, k, None) for k in ("series", "version", "arch")]
    return " ".join(p for p in parts if p)


class ImageCatalog:
    """ExportCatalog over the image store (get / published)."""

    def __init__(self, images) -> None:
        self.images = images

    def names(self) -> list[str]:
        return [i.name for i in self.images.published()]

    def lookup(self, name: str) -> ExportInfo | None:
        image = self.images.get(name)
        if image is None:
            return None
        return ExportInfo(image.name, image.size, _description(image))

    def open(self, name: str) -> OpenExport | None:
        image = self.images.get(name)
        if image is None:
            return None
        try:
            fd = os.open(image.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            # Retired between the store's scan and now: the client hears "unknown export".
            log.warn("NBD cannot open image {name!r} ({path}): {error}",
                     name=name, path=str(image.path), error=e.strerror)
            return None
        return OpenExport(image.name, fd, _description(image))


class NBDService(Service):
    name = "nbd"

    def __init__(self, config, images, reactor=None,
                 on_session: Callable[[SessionRecord], None] | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor
            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.factory = NBDFactory(
            ImageCatalog(images), reactor,
            handshake_timeout=config.handshake_timeout,
            max_connections=config.max_connections,
            max_per_client=config.max_connections_per_client,
            on_session=on_session)
        self.port = None

    @property
    def address(self) -> tuple[str, int] | None:
        """(host, port) actually bound; port 0 in the config picks a free one (tests)."""
        if self.port is None:
            return None
        h = self.port.getHost()
        return h.host, h.port

    @property
    def sessions(self) -> int:
        return len(self.factory.connections)

    def status(self) -> dict:
        return {"connections": len(self.factory.connections),
                "refused": self.factory.refused}

    def startService(self) -> None:
        super().startService()
        if not self.config.enabled:
            return
        listen = self.config.listen
        self.port = self.reactor.listenTCP(listen.port, self.factory, backlog=128,
                                           interface=listen.host)
        log.info("NBD listening on {host}:{port}", host=listen.host,
                 port=self.port.getHost().port)

    def reconfigure(self, config) -> None:
        """SIGHUP: new limits apply to new connections; a new listen address is opened before
        the old one closes. Connected clients keep their sessions either way."""
        self.factory.handshake_timeout = config.handshake_timeout
        self.factory.max_connections = config.max_connections
        self.factory.max_per_client = config.max_connections_per_client
        old_listen, self.config = self.config.listen, config
        if config.listen != old_listen and self.port is not None:
            old_port = self.port
            self.port = self.reactor.listenTCP(config.listen.port, self.factory, backlog=128,
                                               interface=config.listen.host)
            old_port.stopListening()
            log.info("NBD listening on {listen} instead of {old}", listen=str(config.listen),
                     old=str(old_listen))

    def stopService(self):
        super().stopService()
        self.factory.close_all()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
