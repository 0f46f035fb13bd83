"""A school's morning, fed to a BootReport through its real hooks: a classroom boots at once
(DHCP ACK → iPXE script → kernel and initrd over HTTP → NBD root), a few machines stop on the
way. For the status page's tests and its benchmark (tests/bench/page_bench.py)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address
from types import MappingProxyType

from bootserverd.boot.report import BootReport, LiveSession
from bootserverd.model.objects import Defaults, Device, InventoryRecords, School
from bootserverd.model.snapshot import Inventory
from dhcp.leases import Lease
from nbd.transmission import SessionRecord
from services.http.transfer import TransferRecord

IMAGE = "bullseye-2026-11-30-080000-amd64"
NEXT = "bullseye-2026-12-01-080000-amd64"


class Clock:
    def __init__(self, now: float = 1_796_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def mac(i: int) -> str:
    return f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"


def inventory(count: int, hostname=lambda i: f"class{i // 30 + 1}-pc{i % 30 + 1:02d}") -> Inventory:
    devices = tuple(Device(mac(i), hostname(i), "thinclient" if i % 10 else "fatclient",
                           ip=None, school=("north" if i % 2 else "south")) for i in range(count))
    records = InventoryRecords(devices=devices,
                               schools=MappingProxyType({"north": School("north"), "south": School("south", image=NEXT)}),
                               defaults=Defaults(image=IMAGE))
    return Inventory(records, {IMAGE: object(), NEXT: object()}, None)


def morning(inv: Inventory, clock: Clock, *, failing_every: int = 25, seed: int = 1):
    """Every device of ``inv`` boots within a minute; every ``failing_every``-th stops at its
    kernel download. Returns the report and the live NBD sessions (the NBD service's view)."""
    rng = random.Random(seed)
    live: list[LiveSession] = []
    report = BootReport(clock, lambda: live)
    start = clock.now
    plan = sorted((rng.uniform(0, 60), i, d) for i, d in enumerate(inv.devices))
    for offset, i, device in plan:
        clock.now = start + offset
        ip = str(IPv4Address("10.0.0.0") + 10 + i)
        report.dhcp_lease(Lease(IPv4Address(ip), b"k", device.mac, device.hostname, clock.now + 3600, "bound"))
        clock.now += rng.uniform(0.5, 2.0)
        report.transfer(_http(ip, f"/ipxe/{device.mac.replace(':', '-')}.ipxe", 0.05))
        image = inv.image_for(device)
        if failing_every and i % failing_every == failing_every - 1:
            clock.now += 2.0
            report.transfer(_http(ip, f"/boot/{image}/vmlinuz", 2.0, ok=False))
            continue
        clock.now += rng.uniform(2, 8)
        report.transfer(_http(ip, f"/boot/{image}/vmlinuz", 1.5))
        clock.now += rng.uniform(3, 12)
        report.transfer(_http(ip, f"/boot/{image}/initrd.img", 3.0))
        clock.now += rng.uniform(2, 6)
        if i % 7 == 3:   # a few ended their session already (reported when it ends)
            attached, clock.now = clock.now, clock.now + 40.0
            report.transfer(SessionRecord(f"{ip}:40000", image, 300_000_000, 9000, 40.0, "client closed").as_transfer())
            clock.now = attached
        else:
            live.append(LiveSession(f"{ip}:40000", image, clock.now, 120_000_000))
    clock.now = start + 300
    return report, live


def _http(ip: str, path: str, seconds: float, ok: bool = True):
    """A file sent over HTTP, or one the client stopped reading (a stalled download)."""
    size = 8_000_000
    return TransferRecord(client=ip, method="GET", path=path, status=200, start=0, length=size, size=size,
                          sent=size if ok else size // 3, seconds=seconds,
                          outcome="done" if ok else "stalled").as_transfer()
