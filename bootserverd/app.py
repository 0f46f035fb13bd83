"""Composition: config → model, image store, resolver, boot files → one service per listener.

Each protocol service is optional (``<section>.enabled``), so a site can split roles.
SIGHUP calls ``reload``: the config and inventory are re-read and what changed is applied;
a service whose section changed is reconfigured in place when it can be, else restarted
(TFTP transfers and NBD connections live on their own sockets and are not dropped).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

from bootserverd.config import settings as configmod
from bootserverd.boot.files import BootFiles
from bootserverd.boot.report import BootReport, LiveSession
from bootserverd.images.store import ImageStore
from bootserverd.inventory.yaml_source import InventorySource, YamlInventorySource
from bootserverd.ops.metrics import Metrics
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model, diff_records
from bootserverd.boot.resolver import BootResolver

log = Logger(namespace="bootserverd.app")
BULK_CHANGE = 50     # more device changes than this in one delivery are summarised in one line


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    section: str                                  # the config section that configures it
    build: Callable[["BootServer"], Service]


def _tftp(app: "BootServer") -> Service:
    from services.tftp import TFTPService
    return TFTPService(app.config.tftp, app.boot_files, reactor=app.reactor,
                       on_transfer=app.boot_report.tftp_transfer)


def _nbd(app: "BootServer") -> Service:
    from services.nbd import NBDService
    return NBDService(app.config.nbd, app.images, reactor=app.reactor,
                      on_session=app.boot_report.nbd_session)


def _http(app: "BootServer") -> Service:
    from services.http.service import HTTPService
    service = HTTPService(app.config.http, server=app.config.server, images=app.images,
                          boot_files=app.boot_files, model=app.model, resolver=app.resolver,
                          state_dir=app.config.server.state_dir, reactor=app.reactor,
                          metrics=app.metrics, extra_status=app.status_sections,
                          on_transfer=app.boot_report.http_transfer,
                          boot_timeline=app.boot_report.timeline)
    return service


def _dhcp(app: "BootServer") -> Service:
    from services.dhcp import DHCPService
    return DHCPService(app.config.dhcp, app.config.server, app.model, app.resolver,
                       app.config.server.state_dir / "leases", reactor=app.reactor,
                       on_lease=app.boot_report.dhcp_lease)


SERVICES = (ServiceSpec("tftp", "tftp", _tftp), ServiceSpec("nbd", "nbd", _nbd),
            ServiceSpec("http", "http", _http), ServiceSpec("dhcp", "dhcp", _dhcp))


def make_source(config: configmod.Config, clock) -> InventorySource:
    inventory = config.inventory
    if inventory.source == "yaml":
        return YamlInventorySource(inventory.file, inventory.poll_interval, clock=clock)
    from ldapsync.source import LdapInventorySource
    return LdapInventorySource(inventory.ldap, config.server.state_dir, clock=clock,
                               server_hostname=inventory.ldap.server_hostname)


class BootServer:
    """The application: owns the model and its feeders, and the protocol services."""

    def __init__(self, config: configmod.Config, reactor, available=SERVICES):
        self.config = config
        self.reactor = reactor
        self.available = available
        config.server.state_dir.mkdir(parents=True, exist_ok=True)
        self.source = make_source(config, reactor)
        directory = self.source.load()      # raises SchemaError: the CLI reports it and exits 2
        self.model = Model(Inventory(directory, {}, config.images.default))
        self.images = self._make_image_store(config)
        self.resolver = BootResolver(config, self.model)
        self.boot_files = BootFiles(config.tftp.root, self.resolver, self.model)
        self.metrics = Metrics()
        # read at scrape time from whichever source runs (SIGHUP may replace it); yaml: 0
        self.metrics.watch(self.metrics.directory_lag, lambda: getattr(self.source, "lag_seconds", lambda: 0.0)())
        self.boot_report = BootReport(reactor.seconds, self._live_nbd_sessions)
        self.services = MultiService()
        self._running: dict[str, Service] = {}
        self.started = False

    def _make_image_store(self, config: configmod.Config) -> ImageStore:
        store = ImageStore(config.images.dir, config.server.state_dir, self.reactor,
                           settle_seconds=config.images.settle_seconds,
                           rescan_interval=config.images.rescan_interval)
        store.subscribe(self._images_changed)
        return store

    def _images_changed(self) -> None:
        self.model.update(images={image.name: image for image in self.images.published()})

    def _directory_changed(self, directory: InventoryRecords) -> None:
        added, changed, removed = diff_records(self.model.inventory.directory, directory)
        many = len(added) + len(changed) + len(removed) > BULK_CHANGE
        if many:   # a first load or a bulk import: one line, the details at debug
            log.info("directory: {a} devices added, {c} changed, {r} removed",
                     a=len(added), c=len(changed), r=len(removed))
        for verb, devices in (("added", added), ("changed", changed), ("removed", removed)):
            for device in devices:
                (log.debug if many else log.info)("device {device} {verb}", device=device.label(), verb=verb)
        if directory.defaults != self.model.inventory.defaults:
            log.info("organisation defaults changed: image {image}", image=directory.defaults.image)
        for name, school in directory.schools.items():
            if self.model.inventory.schools.get(name) != school:
                log.info("school {name} changed: image {image}", name=name, image=school.image)
        self.model.update(directory=directory)

    def _build_services(self) -> None:
        for spec in self.available:
            if getattr(self.config, spec.section).enabled:
                self._add(spec)

    def start(self, after_listen: Callable[[], None] | None = None) -> defer.Deferred:
        """Start everything; a listener that cannot bind raises (the CLI exits 1).
        ``after_listen`` runs once every socket is open, before any file is written."""
        self._build_services()
        self.services.startService()
        self.started = True
        if after_listen is not None:
            after_listen()
        self.source.start(self._directory_changed)
        ready = self.images.start()
        listening = ", ".join(f"{name} {self._where(name)}" for name in self._running)
        log.info("bootserverd started: {listening}; {n} devices known",
                 listening=listening or "no services", n=len(self.model.inventory.devices))
        return ready

    def _live_nbd_sessions(self):
        nbd = self._running.get("nbd")
        for p in (nbd.factory.connections if nbd is not None else ()):
            if p.export is not None:
                yield LiveSession(getattr(p, "host", p.client), p.export.name, p.started, p.bytes_sent)

    def status_sections(self) -> dict:
        """What /status shows beside the HTTP service's own figures."""
        sections = {"boot": self.boot_report.status()}
        status = getattr(self.source, "status", None)
        if status is not None:
            sections["directory"] = status()
        for name, service in self._running.items():
            if name != "http" and hasattr(service, "status"):
                sections[name] = service.status()
        return sections

    def _where(self, name: str) -> str:
        section = getattr(self.config, name)
        if name == "dhcp":
            return f"{section.mode} on {','.join(section.interfaces)}"
        return str(section.listen)

    def stop(self) -> defer.Deferred:
        self.source.stop()
        self.images.stop()
        if not self.started:
            return defer.succeed(None)
        self.started = False
        return defer.maybeDeferred(self.services.stopService)

    @defer.inlineCallbacks
    def reload(self):
        try:
            new = configmod.load(self.config.path)
        except configmod.ConfigError as exc:
            log.error("SIGHUP: config not applied, keeping the running one:\n{problems}", problems=str(exc))
            return
        old, self.config = self.config, new
        self.resolver.config = new
        self.boot_files.root = new.tftp.root.resolve()
        if new.inventory != old.inventory:
            self.source.stop()
            self.source = make_source(new, self.reactor)
            try:
                self._directory_changed(self.source.load())
            except Exception as exc:
                log.error("SIGHUP: inventory not applied: {err}", err=exc)
            self.source.start(self._directory_changed)
        else:
            self.source.reload()
        if new.images != old.images or new.server.state_dir != old.server.state_dir:
            self.images.stop()
            self.images = self._make_image_store(new)
            self.images.start()
        if new.images.default != old.images.default:
            self.model.update(server_image=new.images.default)
        for spec in self.available:
            yield self._apply(spec, getattr(old, spec.section), getattr(new, spec.section))
        log.info("SIGHUP: configuration {path} re-read", path=str(new.path))

    @defer.inlineCallbacks
    def _apply(self, spec: ServiceSpec, old_section, new_section):
        if old_section == new_section:
            return
        running = self._running.get(spec.name)
        if running is not None and new_section.enabled and hasattr(running, "reconfigure"):
            running.reconfigure(new_section)
            log.info("{name}: configuration applied", name=spec.name)
            return
        if running is not None:
            yield defer.maybeDeferred(running.disownServiceParent)
            log.info("{name}: stopped", name=spec.name)
            del self._running[spec.name]
        if new_section.enabled:
            self._add(spec)
            log.info("{name}: started", name=spec.name)

    def _add(self, spec: ServiceSpec) -> None:
        service = spec.build(self)
        service.setName(spec.name)
        service.setServiceParent(self.services)
        self._running[spec.name] = service
