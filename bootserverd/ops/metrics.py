"""Prometheus metrics: one registry per daemon (no global default registry), with the
counters and gauges every service updates. Written for prometheus-client 0.16 (Debian 12).

Services get the ``Metrics`` object passed in and call e.g.
``metrics.transfers.labels(service="tftp", outcome="done").inc()``; values that live in the
model (devices, images, diff cache size, directory lag) are read at scrape time through
``watch`` so they are never stale.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

SERVICES = ("dhcp", "tftp", "nbd", "http")


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.transfers = Counter("bootserverd_transfers", "Finished transfers by service and outcome",
                                 ["service", "outcome"], registry=r)
        self.bytes_sent = Counter("bootserverd_sent_bytes", "Payload bytes sent", ["service"], registry=r)
        self.errors = Counter("bootserverd_errors", "Errors answered to clients, by kind", ["service", "kind"],
                              registry=r)
        self.requests = Counter("bootserverd_http_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.leases = Gauge("bootserverd_dhcp_leases", "Active DHCP leases", registry=r)
        self.nbd_connections = Gauge("bootserverd_nbd_connections", "Open NBD connections", registry=r)
        self.directory_lag = Gauge("bootserverd_directory_lag_seconds",
                                   "Seconds since the directory replica was last known current", registry=r)
        self.devices = Gauge("bootserverd_devices", "Devices in the model", registry=r)
        self.images = Gauge("bootserverd_images_published", "Published images", registry=r)
        self.image_kernel_signed = Gauge("bootserverd_image_kernel_signed", "1 if the image's kernel (by "
                                         "version) has a Secure Boot signature, else 0", ["image", "version"],
                                         registry=r)
        self.image_resident_bytes = Gauge("bootserverd_image_resident_bytes", "Bytes of the image file in "
                                          "the page cache (mincore), refreshed every "
                                          "images.prewarm.residency_interval", ["image"], registry=r)
        self.diff_cache_bytes = Gauge("bootserverd_diff_cache_bytes", "Bytes of cached diffs", registry=r)
        self.diff_builds_running = Gauge("bootserverd_diff_builds_running", "Diff builders running", registry=r)
        self.diff_builds_queued = Gauge("bootserverd_diff_builds_queued", "Diff builds waiting", registry=r)
        self.diff_builds = Counter("bootserverd_diff_builds", "Finished diff builds by outcome", ["outcome"],
                                   registry=r)
        self.diff_evictions = Counter("bootserverd_diff_evictions", "Diffs evicted for the disk budget",
                                      registry=r)
        self.boots = Counter("bootserverd_boots", "Boots by outcome: booted (NBD root attached) or stopped "
                             "(quiet before it)", ["outcome"], registry=r)
        for outcome in ("booted", "stopped"):
            self.boots.labels(outcome=outcome)
        self.dhcp_rogue_servers = Gauge("bootserverd_dhcp_rogue_servers",
                                        "Other DHCP servers (not ours, not dhcp.known_servers) heard "
                                        "on a served interface in the last hour", registry=r)
        self.dhcp_rogue_replies = Counter("bootserverd_dhcp_rogue_replies",
                                          "Replies seen from rogue DHCP servers, by type", ["type"],
                                          registry=r)
        for kind in ("offer", "ack", "nak"):
            self.dhcp_rogue_replies.labels(type=kind)
        self.dhcp_pool_addresses = Gauge("bootserverd_dhcp_pool_addresses", "Addresses in a subnet's "
                                         "pools, devices' fixed addresses excluded", ["subnet"], registry=r)
        self.dhcp_pool_used = Gauge("bootserverd_dhcp_pool_used", "Pool addresses offered or bound, "
                                    "by subnet", ["subnet"], registry=r)
        for service in SERVICES:             # so dashboards see zeros before the first event
            self.bytes_sent.labels(service=service)
        self._before_scrape: list[Callable[[], None]] = []

    @staticmethod
    def watch(gauge: Gauge, read: Callable[[], float]) -> None:
        """Let ``gauge`` read its value at scrape time."""
        gauge.set_function(read)

    def before_scrape(self, flush: Callable[[], None]) -> Callable[[], None]:
        """Run ``flush`` before each scrape (a counter a hot path keeps as a plain int is brought
        up to date here, not once per request); returns the unsubscribe."""
        self._before_scrape.append(flush)
        return lambda: self._before_scrape.remove(flush) if flush in self._before_scrape else None

    def render(self) -> bytes:
        for flush in list(self._before_scrape):
            flush()
        return generate_latest(self.registry)
