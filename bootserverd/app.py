"""Composition: config → model, image store, resolver, boot files → one service per listener.

The lifecycle rule (DESIGN §2), kept by every collaborator:
- The app builds each collaborator once — the model, the image store, the resolver, the boot
  files, the metrics, the boot report — and hands it to the services that need it (no globals,
  no lookups by name). On SIGHUP a collaborator is reconfigured in place (``reconfigure(...)``),
  so every holder sees the change at once; the one thing that is replaced whole, the inventory
  source, is replaced through ``_use_source``, the only path, and nothing but the app holds it.
- A service whose section changed is reconfigured in place when its ``reconfigure`` can apply
  it (it returns False when it cannot, e.g. a new DHCP port), else stopped and built anew
  through the same ``ServiceSpec.build`` it was first built with.
- Subscriptions return an unsubscribe; a service takes them in ``startService`` and undoes
  them in ``stopService``, so a restarted service leaves no subscriber behind.
- What the app needs from a service is a public method (``status()``, ``live_sessions()``).
Each protocol service is optional (``<section>.enabled``), so a site can split roles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bootserverd.boot.files import BootFiles
from bootserverd.boot.report import BootReport, LiveSession
from bootserverd.boot.resolver import BootResolver
from bootserverd.config import settings as configmod
from bootserverd.images import signature
from bootserverd.images.prewarmer import Prewarmer
from bootserverd.images.store import ImageStore
from bootserverd.inventory.source import InventorySource
from bootserverd.inventory.yaml_source import YamlInventorySource
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model, diff_records
from bootserverd.ops.metrics import Metrics
from services.dhcp import DHCPService
from services.http.service import HTTPService
from services.http.ui.access import allowed_networks
from services.nbd import NBDService
from nbd.trace import DIRNAME as NBD_TRACE_DIR
from services.tftp import TFTPService

log = Logger(namespace="bootserverd.app")
SWEEP_INTERVAL = 15.0   # seconds between counts of finished boots (bootserverd_boots_total)
BULK_CHANGE = 50     # more device changes than this in one delivery are summarised in one line


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    section: str                                  # the config section that configures it
    build: Callable[["BootServer"], Service]
    uses_server: bool = False                     # also configured by the `server:` section


def _tftp(app: "BootServer") -> Service:
    return TFTPService(app.config.tftp, app.boot_files, reactor=app.reactor,
                       on_transfer=app.boot_report.transfer, metrics=app.metrics)


def _nbd(app: "BootServer") -> Service:
    return NBDService(app.config.nbd, app.images, reactor=app.reactor,
                      on_transfer=app.boot_report.transfer, metrics=app.metrics,
                      inherited=app.take_inherited_fds(),
                      trace_dir=app.config.server.state_dir / NBD_TRACE_DIR,
                      mac_of=lambda ip: app.boot_report.mac_by_ip.get(ip))   # the dict is replaced at times


def _http(app: "BootServer") -> Service:
    return HTTPService(app.config.http, server=app.config.server, images=app.images,
                       boot_files=app.boot_files, model=app.model, resolver=app.resolver,
                       state_dir=app.config.server.state_dir, reactor=app.reactor,
                       metrics=app.metrics, extra_status=app.status_sections,
                       on_transfer=app.boot_report.transfer, boot_report=app.boot_report,
                       ui_networks=app.ui_networks, health=app.health)


def _dhcp(app: "BootServer") -> Service:
    return DHCPService(app.config.dhcp, app.config.server, app.model, app.resolver,
                       app.config.server.state_dir / "leases", reactor=app.reactor,
                       on_lease=app.boot_report.dhcp_lease, metrics=app.metrics,
                       pair=app.config.pair)


def _peer(app: "BootServer") -> Service:
    from services.peer import PeerService
    return PeerService(app.config.pair, app.config.http, app.images, reactor=app.reactor)


SERVICES = (ServiceSpec("tftp", "tftp", _tftp), ServiceSpec("nbd", "nbd", _nbd),
            ServiceSpec("http", "http", _http, uses_server=True),
            ServiceSpec("dhcp", "dhcp", _dhcp, uses_server=True),
            ServiceSpec("peer", "pair", _peer))      # pair.servers set: compare with the peer


def make_source(config: configmod.Config, clock) -> InventorySource:
    inventory = config.inventory
    if inventory.source == "yaml":
        return YamlInventorySource(inventory.file, inventory.poll_interval, clock=clock)
    from ldapsync.source import LdapInventorySource    # python-ldap only where a directory is used
    return LdapInventorySource(inventory.ldap, config.server.state_dir, clock=clock,
                               server_hostname=inventory.ldap.server_hostname)


class BootServer:
    """The application: owns the model and its feeders, and the protocol services."""

    def __init__(self, config: configmod.Config, reactor, available=SERVICES,
                 inherited_fds: dict[str, list[int]] | None = None):
        """``inherited_fds``: what systemd's fd store handed back (ops.sdnotify.inherited_fds)."""
        self.config = config
        self.inherited_fds = dict(inherited_fds or {})
        self.reactor = reactor
        self.available = available
        config.server.state_dir.mkdir(parents=True, exist_ok=True)
        self.source = make_source(config, reactor)
        records = self.source.load()      # raises SchemaError: the CLI reports it and exits 2
        self.model = Model(Inventory(records, {}, config.images.default))
        self.images = ImageStore(config.images.dir, config.server.state_dir, reactor,
                                 settle_seconds=config.images.settle_seconds,
                                 rescan_interval=config.images.rescan_interval)
        self.metrics = Metrics()
        # brings each image's boot working set into the page cache; measures residency
        self.prewarmer = Prewarmer(config.images.prewarm, self.images, config.server.state_dir / NBD_TRACE_DIR,
                                   reactor, metrics=self.metrics)
        # read at scrape time from whichever source runs now
        self.metrics.watch(self.metrics.directory_lag, lambda: self.source.lag_seconds())
        self.boot_report = BootReport(reactor.seconds, self._live_nbd_sessions,
                                      stall=config.server.boot_stall_seconds,
                                      booted_after=config.server.booted_after_seconds,
                                      on_outcome=lambda outcome: self.metrics.boots.labels(outcome=outcome).inc())
        self._sweep = LoopingCall(self.boot_report.sweep)   # boots' outcomes counted as they happen
        self._sweep.clock = reactor
        # a device sent an error menu is a boot that stops there: the report says why
        self.resolver = BootResolver(config, self.model, on_problem=self.boot_report.boot_problem)
        self.boot_files = BootFiles(config.tftp.root, self.resolver, self.model)
        self.services = MultiService()
        self._running: dict[str, Service] = {}
        self._unsubscribe_images: Callable[[], None] | None = None
        self.started = False

    # -- what the feeders deliver --
    def _images_changed(self) -> None:
        before = self.model.inventory.images
        self.model.update(images={image.name: image for image in self.images.published()})
        published = [name for name, image in self.model.inventory.images.items() if before.get(name) is not image]
        if any(not all(self.model.inventory.images[name].kernel_signed.values()) for name in published):
            exposed = signature.exposures(self.model.inventory)
            for name in published:     # one line per image published, after the store's own
                if name in exposed:
                    log.warn("{line}", line=exposed[name].line(), image=name)

    def _records_changed(self, records: InventoryRecords) -> None:
        added, changed, removed = diff_records(self.model.inventory.records, records)
        many = len(added) + len(changed) + len(removed) > BULK_CHANGE
        if many:   # a first load or a bulk import: one line, the details at debug
            log.info("directory: {a} devices added, {c} changed, {r} removed",
                     a=len(added), c=len(changed), r=len(removed))
        for verb, devices in (("added", added), ("changed", changed), ("removed", removed)):
            for device in devices:
                (log.debug if many else log.info)("device {device} {verb}", device=device.label(), verb=verb)
        if records.defaults != self.model.inventory.defaults:
            log.info("organisation defaults changed: image {image}", image=records.defaults.image)
        for name, school in records.schools.items():
            if self.model.inventory.schools.get(name) != school:
                log.info("school {name} changed: image {image}", name=name, image=school.image)
        self.model.update(records=records)

    # -- lifecycle --
    def start(self, after_listen: Callable[[], None] | None = None) -> defer.Deferred:
        """Start everything; a listener that cannot bind raises (the CLI exits 1).
        ``after_listen`` runs once every socket is open, before any file is written."""
        for spec in self.available:
            if getattr(self.config, spec.section).enabled:
                self._add(spec)
        self.services.startService()
        self.started = True
        if after_listen is not None:
            after_listen()
        self.source.start(self._records_changed)
        self._unsubscribe_images = self.images.subscribe(self._images_changed)
        self._sweep.start(min(SWEEP_INTERVAL, self.config.server.boot_stall_seconds / 2), now=False)
        self.prewarmer.start()          # subscribed before the first scan publishes the images
        ready = self.images.start()
        listening = ", ".join(f"{name} {self._where(name)}" for name in self._running)
        log.info("bootserverd started: {listening}; {n} devices known",
                 listening=listening or "no services", n=len(self.model.inventory.devices))
        return ready

    def take_inherited_fds(self) -> dict[str, list[int]]:
        """The fds systemd handed back at this start (its fd store): given once, to the first
        service built; later builds (SIGHUP) get none."""
        fds, self.inherited_fds = self.inherited_fds, {}
        return fds

    def stop(self) -> defer.Deferred:
        """The process stops: NBD leaves its connections to the next start (systemd fd store)."""
        nbd = self._running.get("nbd")
        if nbd is not None:
            nbd.keep_connections = True
        self.source.stop()
        self.prewarmer.stop()           # cancels a running prewarm
        self.images.stop()
        if self._sweep.running:
            self._sweep.stop()
        if self._unsubscribe_images is not None:
            self._unsubscribe_images()
            self._unsubscribe_images = None
        if not self.started:
            return defer.succeed(None)
        self.started = False
        return defer.maybeDeferred(self.services.stopService)

    # -- what the app shows --
    def _live_nbd_sessions(self) -> list[LiveSession]:
        nbd = self._running.get("nbd")
        return nbd.live_sessions() if nbd is not None else []

    def status_sections(self) -> dict:
        """What /status shows beside the HTTP service's own figures."""
        sections = {"boot": self.boot_report.status(), "directory": self.source.status(),
                    "prewarm": self.prewarmer.status()}
        for name, service in self._running.items():
            if name != "http":
                sections[name] = service.status()
        return sections

    def health(self) -> dict:
        """The status page's health: each enabled service (up or not, where, its figures) and
        the directory feed."""
        services = {}
        for spec in self.available:
            if getattr(self.config, spec.section).enabled:
                running = self._running.get(spec.name)
                status = {} if running is None else running.figures() if spec.name == "http" else running.status()
                services[spec.name] = {"up": running is not None and running.running,
                                       "listen": self._where(spec.name), "status": status}
        return {"services": services, "directory": self.source.status()}

    def ui_networks(self) -> tuple:
        """Who may see the status page: ``http.ui_allow``, else loopback and the DHCP subnets."""
        dhcp = self.config.dhcp
        served = [subnet.network for subnet in dhcp.subnets] if dhcp.enabled else []
        return allowed_networks(self.config.http.ui_allow, served)

    def running_services(self) -> dict[str, Service]:
        """The services running now, by name (a copy: SIGHUP may change the set)."""
        return dict(self._running)

    def _where(self, name: str) -> str:
        if name == "peer":
            from services.peer import peer_url
            return f"of {peer_url(self.config.pair, self.config.http)}"
        section = getattr(self.config, name)
        if name == "dhcp":
            return f"{section.mode} on {','.join(section.interfaces)}"
        return str(section.listen)

    # -- SIGHUP --
    @defer.inlineCallbacks
    def reload(self):
        try:
            new = configmod.load(self.config.path)
        except configmod.ConfigError as exc:
            log.error("SIGHUP: config not applied, keeping the running one:\n{problems}", problems=str(exc))
            return
        old, self.config = self.config, new
        self.resolver.reconfigure(new)
        self.boot_files.reconfigure(new.tftp.root)
        if new.inventory != old.inventory:
            self._use_source(make_source(new, self.reactor))
        else:
            self.source.reload()
        if new.images.default != old.images.default:
            self.model.update(server_image=new.images.default)
        yield self.images.reconfigure(new.images.dir, new.server.state_dir, new.images.settle_seconds,
                                      new.images.rescan_interval)
        self.prewarmer.reconfigure(new.images.prewarm, new.server.state_dir / NBD_TRACE_DIR)
        for spec in self.available:
            yield self._apply(spec, old, new)
        log.info("SIGHUP: configuration {path} re-read", path=str(new.path))

    def _use_source(self, source: InventorySource) -> None:
        """The one path by which the inventory source is replaced."""
        self.source.stop()
        self.source = source
        try:
            self._records_changed(source.load())
        except Exception as exc:
            log.error("SIGHUP: inventory not applied: {err}", err=exc)
        source.start(self._records_changed)

    @defer.inlineCallbacks
    def _apply(self, spec: ServiceSpec, old: configmod.Config, new: configmod.Config):
        old_section, new_section = getattr(old, spec.section), getattr(new, spec.section)
        server_changed = spec.uses_server and (old.server != new.server or old.pair != new.pair)
        if old_section == new_section and not server_changed:
            return
        running = self._running.get(spec.name)
        if running is not None and new_section.enabled and not server_changed and hasattr(running, "reconfigure"):
            if running.reconfigure(new_section) is not False:     # False: cannot apply in place
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
