"""A small real world for the fuzz targets: config, model and BootResolver over an inventory
with a reserved device, a disabled one and a laptop, and two published images."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address
from pathlib import Path
from types import SimpleNamespace

from bootserverd.config.settings import Config, ServerConfig
from bootserverd.model.objects import Defaults, Device, School
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver

IMAGE = "bookworm-2026-11-20-101500-amd64"
RESERVED_MAC = "52:54:00:aa:00:01"
DEVICES = (
    Device(RESERVED_MAC, hostname="class-12", type="thinclient", ip="10.0.0.57", school="s1"),
    Device("52:54:00:aa:00:02", hostname="lab-3", type="laptop", boot_mode="dualboot",
           kernel_args="nomodeset"),
    Device("52:54:00:aa:00:03", hostname="old", enabled=False),
    Device("52:54:00:aa:00:04", hostname="far", ip="10.9.0.5"),
)


def make_resolver(devices=DEVICES, root: Path = Path("/nonexistent"), **config_changes) -> BootResolver:
    directory = InventoryRecords(devices, {"s1": School("s1", kernel_args="splash")},
                          Defaults(image=IMAGE, kernel_args="quiet"))
    images = {IMAGE: SimpleNamespace(kernel=root / "vmlinuz", initrd=root / "initrd.img"),
              "other-img": SimpleNamespace(kernel=root / "vmlinuz", initrd=root / "initrd.img")}
    model = Model(Inventory(directory, images, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=Path("/tmp")))
    return BootResolver(dataclasses.replace(config, **config_changes), model)
