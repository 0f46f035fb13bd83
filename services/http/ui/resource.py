"""The status page's twisted.web side: who may look, what is gathered, the response headers.

The page is rendered on the reactor from what is in memory (no I/O); its cost is measured in
tests/bench/page_bench.py (2,000 devices)."""

from __future__ import annotations

from typing import Callable

from bootserverd.model.objects import normalize_mac
from services.http.ui import html, view
from services.http.ui.access import may_see
from services.http.util import client_ip, send_error

# the page needs no script and loads nothing from elsewhere: say so to the browser
HEADERS = {b"Content-Type": b"text/html; charset=utf-8", b"Cache-Control": b"no-store",
           b"X-Content-Type-Options": b"nosniff", b"Referrer-Policy": b"no-referrer",
           b"Content-Security-Policy": b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                                       b"form-action 'self'; frame-ancestors 'none'"}


class UiResource:
    def __init__(self, service, networks: Callable[[], tuple], health: Callable[[], dict]):
        self.service = service            # HTTPService: model, images, diffs, boot report, clock
        self.networks = networks          # () → the networks that may see the page (access.py)
        self.health = health              # () → the app's health(): services and directory

    def inputs(self, now: float, health: dict) -> view.PageInputs:
        svc = self.service
        report = svc.boot_report
        return view.PageInputs(
            now=now, inventory=svc.model.inventory,
            boots=report.summaries(events=False) if report is not None else [],
            images=[image.summary() for image in svc.images.published()],
            health=health, diffs=svc.diffs.status(), reports=svc.device_resource.reports,
            exposures=svc.kernel_exposures())

    def timelines(self, macs: list[str]) -> list[dict]:
        report = self.service.boot_report
        return report.timelines(macs) if report is not None else []

    def render(self, request, parts: list[str]) -> bytes:
        if not may_see(self.networks(), client_ip(request)):
            return send_error(request, 403, "the status page is not open to this address (http.ui_allow)")
        page = self.page(parts, request.args)
        if page is None:
            return send_error(request, 404, "no such page")
        body = page.encode("utf-8")
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        request.setHeader(b"Content-Length", str(len(body)).encode())
        return b"" if request.method == b"HEAD" else body

    def page(self, parts: list[str], args: dict) -> str | None:
        """The page at /ui/<parts> (``[]`` is the overview), or None. Each page gathers only what
        it shows: the boots' events only for the storm's rows or the one device."""
        now, health = self.service.reactor.seconds(), self.health()
        if parts == ["health"]:
            return html.health_page(health, now)
        if len(parts) == 2 and parts[0] == "device":
            try:
                mac = normalize_mac(parts[1])
            except ValueError:
                return None
            boot = next(iter(self.timelines([mac])), None)
            return html.device(view.device_row(self.service.model.inventory, mac, boot), mac, health, now)
        if parts not in ([], [""], ["devices"], ["images"]):
            return None
        inputs = self.inputs(now, health)
        if parts in ([], [""]):
            counts, stopped = view.summary_rows(inputs, "stopped")
            storm = self.timelines([b["mac"] for b in view.last_storm(inputs.boots)])
            return html.overview(stopped, counts, storm, health, now)
        rows = view.device_rows(inputs)
        if parts == ["devices"]:
            filters: dict = {key: _arg(args, key) for key in ("school", "type", "state", "q")}
            filters["page"] = int(_arg(args, "page")) if _arg(args, "page").isdigit() else 1
            shown = view.filter_rows(rows, school=filters["school"], type=filters["type"], state=filters["state"],
                                     search=filters["q"])
            return html.devices(rows, shown, filters, health, now)
        return html.images(view.image_rows(inputs, rows), inputs.diffs, health, now)


def _arg(args: dict, name: str) -> str:
    values = args.get(name.encode())
    return values[0].decode("utf-8", "replace")[:200] if values else ""
