"""The HTTP listener (twisted.web): images, diffs, iPXE boot files, device API, status, metrics,
the status page for people (/ and /ui/...).

One leaf resource routes on the first path segment to a handler module (services/http_*.py,
one concern each). Twisted has already split and percent-decoded the path; handlers get the
remaining segments and never touch the filesystem with them directly.
"""

from __future__ import annotations

import time
from pathlib import Path

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.resource import Resource

from bootserverd import __version__
from bootserverd.images.diffs import DiffCache, in_window, parse_window
from bootserverd.images.signature import Exposure, exposures
from bootserverd.ops.metrics import Metrics
from bootserverd.ops.transfers import TransferLedger
from bootserverd.model.objects import normalize_mac
from bootserverd.model.rollout import release_of
from services.http.bucket import TokenBucket
from services.http.devices import DeviceResource
from services.http.diffs import DiffResource
from services.http.files import BootFileResource, FileSender, ImageResource
from services.http.limits import LimitedSite
from services.http.metrics import MetricsResource
from services.http.transfer import TransferRecord
from services.http.ui.access import allowed_networks
from services.http.ui.resource import UiResource
from services.http.util import send_error, send_json

log = Logger(namespace="bootserverd.http")
PREBUILD_INTERVAL = 600.0           # seconds between ahead-of-time checks (also on every model change)


def unhealthy(health: dict) -> list[str]:
    """/healthz: the enabled services that are not running (the peer comparison does not
    count: a server is fit to hold the service address whatever its peer does)."""
    return sorted(name for name, s in (health.get("services") or {}).items()
                  if name != "peer" and not s.get("up"))


class _Site(LimitedSite):
    noisy = False                     # no "Starting factory" lines

    def log(self, request) -> None:
        """Transfers log themselves (one line with bytes, time and rate); no access log."""


class Router(Resource):
    isLeaf = True

    def __init__(self, service: "HTTPService"):
        super().__init__()
        self.service = service

    def render(self, request):
        try:
            result = self._route(request)
        except Exception:                    # a bug must cost one request, not the reactor
            log.failure("HTTP {path}: internal error", path=request.uri.decode("latin-1", "replace")[:300])
            if request.startedWriting:
                request.channel.transport.loseConnection()
                return b""
            result = send_error(request, 500, "internal error (see the server log)", level="error")
        self._count(request)
        return result

    ROUTES = ("images", "boot", "ipxe", "tftp", "status", "diffs", "v1", "metrics", "ui", "healthz")

    def _count(self, request) -> None:
        head = request.postpath[0].decode("latin-1") if request.postpath else ""
        route = "ui" if head == "" else head if head in self.ROUTES else "other"   # bounded label values
        metrics = self.service.metrics
        metrics.requests.labels(route=route, status=str(request.code)).inc()
        if request.code >= 400:
            metrics.errors.labels(service="http", kind=str(request.code)).inc()

    def _route(self, request):
        svc = self.service
        method = request.method
        parts = [p.decode("utf-8", "surrogateescape") for p in request.postpath]
        head = parts[0] if parts else ""
        rest = parts[1:]
        if method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET, HEAD")
            return send_error(request, 405, f"method {method.decode('latin-1')[:20]} not allowed")
        if head == "images":
            return svc.image_resource.render(request, rest)
        if head == "boot":
            return svc.boot_resource.boot(request, rest)
        if head == "ipxe":
            return svc.boot_resource.ipxe(request, rest)
        if head == "tftp":
            return svc.boot_resource.tftp(request, rest)
        if head == "status" and not rest:
            return send_json(request, svc.status())
        if head == "healthz" and not rest:       # keepalived's track_script (etc/keepalived)
            down = unhealthy(svc.health())
            return send_json(request, {"ok": not down, "down": down}, 503 if down else 200)
        if head == "status" and len(rest) == 2 and rest[0] == "boot":
            return svc.boot_status(request, rest[1])
        if head == "diffs":
            return svc.diff_resource.render(request, rest)
        if head == "v1" and rest[:1] == ["devices"]:
            return svc.device_resource.render(request, rest[1:])
        if head == "metrics" and not rest:
            return svc.metrics_resource.render(request)
        if (head == "" and not rest) or head == "ui":
            return svc.ui_resource.render(request, rest)
        return send_error(request, 404, "no such resource")


class HTTPService(Service):
    name = "http"

    def __init__(self, config, *, server, images, boot_files, model, resolver, state_dir: Path,
                 reactor=None, metrics=None, extra_status=None, on_transfer=None, boot_report=None,
                 ui_networks=None, health=None):
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.config = config
        self.server = server
        self.images = images
        self.boot_files = boot_files
        self.model = model
        self.resolver = resolver
        self.state_dir = Path(state_dir)
        self.reactor = reactor
        if metrics is None:                   # the app may share one registry between services
            metrics = Metrics()
        self.metrics = metrics
        self.extra_status = extra_status      # () -> {section: dict}: directory, dhcp, ...
        self.boot_report = boot_report        # bootserverd.boot.report.BootReport (the app's)
        self.started_at = time.time()
        self.port = None
        self.site = None
        self.ledger = TransferLedger("http", metrics, on_transfer)   # on_transfer: the boot report
        self.ledger.outcomes.update(done=0, aborted=0, stalled=0)   # /status shows them from the start
        self.sender = FileSender(reactor, self._transfer_done, config.stall_timeout, config.sendfile)
        # laptop updates (images, diffs, zsync) share http.update_rate; boot files never wait
        self.updates = TokenBucket(config.update_rate)
        self.update_sender = FileSender(reactor, self._transfer_done, config.stall_timeout, config.sendfile,
                                        self.updates)
        self.boot_resource = BootFileResource(boot_files, self.sender)
        self.metrics_resource = MetricsResource(metrics)
        self.diffs = DiffCache(self.state_dir / "diffs", images, reactor, workers=config.diff_workers,
                               block_size=config.diff_block_size, nice=config.diff_nice,
                               max_bytes=config.diff_cache_max_bytes, metrics=metrics)
        self.image_resource = ImageResource(images, self.update_sender, self.release_state,
                                            zsync=self.diffs.lookup_zsync)
        self.diff_resource = DiffResource(self.diffs, self.update_sender)
        self.device_resource = DeviceResource(model, images, self.diffs, resolver.http_base,
                                              self.state_dir / "device-reports.json", reactor)
        self.diffs.demand = self.device_resource.demand     # eviction keeps what devices need
        self.health = health or (lambda: {})  # the app's health(): /healthz, the status page
        self.ui_resource = UiResource(self, ui_networks or (lambda: allowed_networks(config.ui_allow, ())),
                                      self.health)
        window = config.diff_prebuild_window
        self._window = parse_window(window) if window else None
        self._prebuild_loop = None
        self._unsubscribe = None
        self._unscrape = None
        self._exposed: tuple[object, dict[str, Exposure]] = (None, {})
        self._watch_gauges()

    def _prebuild(self) -> None:
        """Queue the diffs reported devices need, inside the configured window (local time)."""
        if not self.running:
            return
        now = time.localtime(self.reactor.seconds())
        if in_window(self._window, now.tm_hour * 60 + now.tm_min):
            self.device_resource.prebuild()

    def _watch_gauges(self) -> None:
        m = self.metrics
        m.watch(m.devices, lambda: len(self.model.inventory.devices))
        m.watch(m.images, lambda: len(self.images.published()))
        m.watch(m.diff_cache_bytes, self.diffs.total_bytes)
        m.watch(m.diff_builds_running, lambda: len(self.diffs.running))
        m.watch(m.diff_builds_queued, lambda: len(self.diffs.queue))

    def _kernel_gauges(self) -> None:
        """bootserverd_image_kernel_signed of the images published now (before each scrape)."""
        gauge = self.metrics.image_kernel_signed
        gauge.clear()
        for image in self.images.published():
            for version, signed in image.kernel_signed.items():
                gauge.labels(image=image.name, version=version).set(1 if signed else 0)

    def kernel_exposures(self) -> dict[str, Exposure]:
        """Images with a kernel without a Secure Boot signature → the devices that would boot it;
        computed once per model snapshot (a pass over the devices, only when such an image exists)."""
        inventory = self.model.inventory
        if self._exposed[0] is not inventory:
            self._exposed = (inventory, exposures(inventory))
        return self._exposed[1]

    def release_state(self, name: str) -> str:
        return release_of(self.model.inventory.records.releases, name)

    def _transfer_done(self, record: TransferRecord) -> None:
        (log.info if record.ok else log.warn)("{line}", line=record.line())
        self.ledger.add(record.as_transfer())

    def figures(self) -> dict:
        """This service's own counts (the "http" section of /status)."""
        return {"transfers": dict(self.ledger.outcomes), "bytes_sent": self.ledger.bytes_sent,
                **(self.site.status() if self.site is not None else {})}

    def status(self) -> dict:
        inventory = self.model.inventory
        exposed = self.kernel_exposures()
        images = [{**image.summary(), "secure_boot_at_risk": exposed[image.name].as_dict()
                   if image.name in exposed else None} for image in self.images.published()]
        return {"version": __version__, "uptime_seconds": round(time.time() - self.started_at, 1),
                "images": images,
                "devices": len(inventory.devices),
                "http": self.figures(),
                "diffs": self.diffs.status(),
                **(self.extra_status() if self.extra_status else {})}

    def boot_status(self, request, text: str):
        """/status/boot/<mac>: the device's last boot as `bootserverd status --device` shows it."""
        try:
            mac = normalize_mac(text)
        except ValueError:
            return send_error(request, 400, f"{text[:64]!r} is not a MAC address")
        report = self.boot_report.timeline(mac) if self.boot_report is not None else None
        if report is None:
            return send_error(request, 404, f"{mac}: no boot seen since the daemon started "
                                            "(or not among the recent devices)")
        return send_json(request, report)

    def startService(self) -> None:
        super().startService()
        listen = self.config.listen
        self.site = _Site(Router(self), reactor=self.reactor, metrics=self.metrics,
                          max_per_client=self.config.max_connections_per_client,
                          header_timeout=self.config.header_timeout)
        # Twisted's default backlog of 50 drops SYNs when a classroom boots at once (each
        # drop costs the client a 1 s retransmit); nginx uses 511
        self.port = self.reactor.listenTCP(listen.port, self.site, backlog=511, interface=listen.host)
        self.diffs.start()
        self._unscrape = self.metrics.before_scrape(self._kernel_gauges)
        # a change in the directory or the image set may change what devices need: build ahead
        self._unsubscribe = self.model.subscribe(lambda old, new: self._prebuild())
        self._prebuild_loop = LoopingCall(self._prebuild)
        self._prebuild_loop.clock = self.reactor
        self._prebuild_loop.start(PREBUILD_INTERVAL, now=True)

    def stopService(self):
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._unscrape is not None:
            self._unscrape()
            self._unscrape = None
            self.metrics.image_kernel_signed.clear()
        self.diffs.stop()
        if self._prebuild_loop is not None and self._prebuild_loop.running:
            self._prebuild_loop.stop()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()
        return None
