"""/v1/devices/<mac-or-hostname>?current=<image>: what a laptop should run, and how to get it.

The answer applies inheritance and the staged rollout (bootserverd.model.rollout) to the current
model snapshot. The device's ``current`` is recorded as its boot report (kept in memory and in
``state_dir/device-reports.json``): it drives which diffs are built ahead of time and which
the cache keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.logger import Logger

from bootserverd.images.diffs import pair_problem
from bootserverd_client.fsutil import write_atomically
from bootserverd.model.objects import SAFE_IMAGE_NAME, normalize_mac
from bootserverd.model.rollout import choose, demand, release_of
from services.http.util import send_error, send_json

log = Logger(namespace="bootserverd.http")
MAX_REPORTS = 100000


class DeviceResource:
    def __init__(self, model, images, diffs, base_url, state_file: Path, clock):
        self.model = model
        self.images = images
        self.diffs = diffs
        self.base_url = base_url               # callable → "http://server:port" or None
        self.state_file = state_file
        self.clock = clock
        self.reports: dict[str, dict] = self._load()

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.state_file.read_text())
            return {str(k): v for k, v in data.items() if isinstance(v, dict)}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save(self) -> None:
        try:
            write_atomically(self.state_file, json.dumps(self.reports, indent=0, sort_keys=True).encode())
        except OSError as exc:
            log.warn("cannot save device reports to {path}: {err}", path=str(self.state_file), err=exc)

    def find(self, key: str):
        inventory = self.model.inventory
        try:
            return inventory.device(normalize_mac(key))
        except ValueError:
            pass
        lowered = key.lower()
        for device in inventory.devices:
            if device.hostname and device.hostname.lower() == lowered:
                return device
        return None

    def demand(self) -> dict:
        """(current → wanted) → device count, from the reports; for the diff cache."""
        return demand(self.model.inventory, {mac: r.get("current") for mac, r in self.reports.items()})

    def prebuild(self) -> int:
        return self.diffs.prebuild(self.demand()) if self.diffs is not None else 0

    def render(self, request, parts: list[str]):
        if len(parts) != 1 or not parts[0]:
            return send_error(request, 404, "devices are /v1/devices/<mac-or-hostname>")
        device = self.find(parts[0])
        if device is None:
            return send_error(request, 404, f"unknown device {parts[0][:64]!r}")
        current = _arg(request, b"current")
        if current is not None and not SAFE_IMAGE_NAME.match(current):
            return send_error(request, 400, "current= must be an image name")
        inventory = self.model.inventory
        choice = choose(inventory, device)
        if current is not None:
            self._record(device, current, choice)
        if not device.enabled:
            return send_error(request, 403, f"device {device.label()} is disabled")
        if choice.image is None:
            return send_error(request, 404, f"no image is assigned to {device.label()}")
        image = self.images.get(choice.image)
        if image is None:
            return send_error(request, 404, f"image {choice.image} is not published on this server")
        base = self.base_url() or ""
        answer = {
            "device": {"mac": device.mac, "hostname": device.hostname, "type": inventory.type_for(device)},
            "image": image.name, "size": image.size, "sha256": image.sha256,
            "url": f"{base}/images/{image.name}.img", "release": release_of(inventory.records.releases, image.name),
            "rollout": {"assigned": choice.assigned, "next_image": choice.next_image,
                        "in_rollout": choice.in_rollout, "reason": choice.reason},
            "current": current, "up_to_date": current == image.name, "diff": None,
        }
        source = self.images.get(current) if current else None
        if source is not None and self.diffs is not None and pair_problem(source, image) is None:
            answer["diff"] = {"from": source.name, "url": f"{base}/diffs/{source.name}--{image.name}.rdiff"}
            self.diffs.request(source, image)           # start building now: the laptop asks next
        return send_json(request, answer)

    def _record(self, device, current: str, choice) -> None:
        before = self.reports.get(device.mac, {})
        if before.get("current") == current and before.get("wanted") == choice.image:
            return
        if len(self.reports) >= MAX_REPORTS and device.mac not in self.reports:
            return
        self.reports[device.mac] = {"current": current, "wanted": choice.image, "at": int(self.clock.seconds())}
        self._save()
        log.info("device {device} runs {current}; should run {wanted} ({reason})", device=device.label(),
                 current=current, wanted=choice.image, reason=choice.reason)


def _arg(request, name: bytes) -> str | None:
    values = request.args.get(name)
    return values[0].decode("utf-8", "replace") if values else None
