"""What the status page shows, as plain rows: devices with their last boot, the last boot storm,
images and their rollout. Pure: the inputs are handed in (see resource.py), nothing is read here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Mapping

from bootserverd.images.signature import Exposure
from bootserverd.model.rollout import choose, release_of

STATES = ("booted", "attached", "in progress", "stopped", "not seen")
STORM_GAP = 600.0          # boots starting further apart than this belong to different storms
STORM_ROWS = 400           # the storm picture's rows (a school's classroom wave fits)
UNKNOWN_RECENT = 86400.0   # unknown MACs booted within this long are listed


@dataclass(frozen=True)
class PageInputs:
    now: float                        # epoch seconds (the boot report's clock)
    inventory: object                 # bootserverd.model.snapshot.Inventory
    boots: list[dict]                 # BootReport.summaries(events=False): most recently active first
    images: list[dict]                # ImageStore image summaries
    health: dict                      # the app's health(): services, directory
    diffs: dict                       # DiffCache.status()
    reports: Mapping[str, dict] = field(default_factory=dict)   # laptops: mac → {current, wanted, at}
    exposures: Mapping[str, Exposure] = field(default_factory=dict)   # images with unsigned kernels


@dataclass(frozen=True)
class DeviceRow:
    mac: str
    hostname: str | None
    type: str | None
    school: str | None
    known: bool
    enabled: bool
    image: str | None                 # what it should run now (inheritance and rollout)
    next_image: str | None            # the rollout's next image for it (it may not be in yet)
    boot: dict | None                 # its last boot (BootReport summary), None if not seen

    @property
    def state(self) -> str:
        """One of STATES."""
        return self.state_of(self.boot)

    @staticmethod
    def state_of(boot: dict | None) -> str:
        if boot is None:
            return "not seen"
        state = boot["state"]
        if state == "root attached":
            return "attached"
        return "stopped" if state.startswith("stopped") else state

    @property
    def running(self) -> str | None:
        """The image it booted (its NBD export) or, for a laptop, the one it reported."""
        return self.boot.get("image") if self.boot else None


def device_rows(inputs: PageInputs) -> list[DeviceRow]:
    """Every known device, then unknown MACs seen recently, each with its last boot."""
    inventory = inputs.inventory
    by_mac = {b["mac"]: b for b in inputs.boots}
    rows = [_row(inventory, d, d.mac, by_mac.get(d.mac))
            for d in sorted(inventory.devices, key=lambda d: ((d.school or ""), (d.hostname or ""), d.mac))]
    rows += [_row(inventory, None, boot["mac"], boot) for boot in inputs.boots
             if inventory.device(boot["mac"]) is None and inputs.now - boot["started"] <= UNKNOWN_RECENT]
    return rows


def device_row(inventory, mac: str, boot: dict | None) -> DeviceRow | None:
    """One device's row (None: not in the directory and not seen booting)."""
    device = inventory.device(mac)
    return _row(inventory, device, mac, boot) if device is not None or boot is not None else None


def _row(inventory, device, mac: str, boot: dict | None) -> DeviceRow:
    choice = choose(inventory, device, mac)
    if device is None:
        return DeviceRow(mac, boot.get("hostname") if boot else None, None, None, False, True,
                         choice.image, choice.next_image, boot)
    return DeviceRow(mac, device.hostname, inventory.type_for(device), device.school, True, device.enabled,
                     choice.image, choice.next_image, boot)


def filter_rows(rows: list[DeviceRow], *, school: str = "", type: str = "", state: str = "",
                search: str = "") -> list[DeviceRow]:
    needle = search.strip().lower()
    return [r for r in rows
            if (not school or r.school == school) and (not type or r.type == type)
            and (not state or r.state == state)
            and (not needle or needle in r.mac or needle in (r.hostname or "").lower()
                 or needle in ((r.boot or {}).get("ip") or ""))]


def summary_rows(inputs: PageInputs, wanted: str) -> tuple[Counter, list[DeviceRow]]:
    """The overview's figures without a row per device: the count of each state over the rows
    ``device_rows`` would give (Counter of their ``state``), and the rows in state ``wanted`` only."""
    inventory = inputs.inventory
    counts: Counter = Counter()
    chosen = []
    seen = 0
    for boot in inputs.boots:
        device = inventory.device(boot["mac"])
        if device is None and inputs.now - boot["started"] > UNKNOWN_RECENT:
            continue
        seen += device is not None
        state = DeviceRow.state_of(boot)
        counts[state] += 1
        if state == wanted:
            chosen.append(_row(inventory, device, boot["mac"], boot))
    counts["not seen"] += len(inventory.devices) - seen
    return counts, chosen


def last_storm(boots: list[dict]) -> list[dict]:
    """The boots of the latest wave: going back from the newest start, until a gap of
    STORM_GAP; oldest first, at most STORM_ROWS (the latest)."""
    starts = sorted(boots, key=lambda b: b["started"], reverse=True)
    wave = []
    for boot in starts:
        if wave and wave[-1]["started"] - boot["started"] > STORM_GAP:
            break
        wave.append(boot)
        if len(wave) == STORM_ROWS:
            break
    return wave[::-1]


@dataclass(frozen=True)
class ImageRow:
    name: str
    size: int
    release: str
    sha256: str
    assigned: int                     # devices that should run it now
    running: int                      # devices whose last boot (or laptop report) used it
    next_for: int                     # devices for which it is the rollout's next image
    kernel_signed: Mapping[str, bool] = field(default_factory=dict)   # kernel → has a Secure Boot signature
    default_kernel: str | None = None
    exposure: Exposure | None = None  # its unsigned kernels and the devices that would boot one


def image_rows(inputs: PageInputs, rows: list[DeviceRow]) -> list[ImageRow]:
    releases = inputs.inventory.records.releases
    assigned = Counter(r.image for r in rows if r.known)
    running = Counter((inputs.reports.get(r.mac) or {}).get("current") or r.running for r in rows)
    upcoming = Counter(r.next_image for r in rows if r.known)
    return [ImageRow(i["name"], i["size"], release_of(releases, i["name"]), i["sha256"] or "",
                     assigned[i["name"]], running[i["name"]], upcoming[i["name"]],
                     i.get("kernel_signed") or {}, i.get("default_kernel"), inputs.exposures.get(i["name"]))
            for i in inputs.images]


def rogue_servers(health: dict) -> list[dict]:
    """The rogue DHCP servers the DHCP service reports (none when it does not run)."""
    dhcp = (health.get("services") or {}).get("dhcp") or {}
    return list((dhcp.get("status") or {}).get("rogue_servers") or ())
