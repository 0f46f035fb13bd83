"""The in-memory model: one immutable snapshot of devices, schools, defaults and images.

Every change builds a new ``Inventory`` and swaps it in whole (``Model.replace``), so a
protocol handler always sees one consistent version; subscribers hear about each swap.
Pure (stdlib only).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Callable, Mapping

from bootserverd.model.objects import Device, InventoryRecords
from bootserverd.model.rollout import choose

class Inventory:
    """One immutable snapshot of everything the protocols need to answer a client."""

    def __init__(self, records: InventoryRecords, images: Mapping[str, object], server_image: str | None):
        self.records = records
        self.devices = records.devices
        self.schools = records.schools
        self.defaults = records.defaults
        self.images = MappingProxyType(dict(images))
        self.server_image = server_image
        self._by_mac = records.by_mac

    def device(self, mac: str) -> Device | None:
        return self._by_mac.get(mac)

    def image_for(self, device: Device | None) -> str | None:
        """Inheritance (device → school → … → organisation: the order is in rollout._assignment),
        then the staged rollout: the assigned image, or its next image for devices in it."""
        return choose(self, device).image

    def unregistered_image(self) -> str | None:
        """What an unregistered MAC boots first (the default of the unknown-client menu) when the
        directory says so: Puavo's boot server → organisation chain. None for sources without a
        boot-server level (YAML, bootserverd's schema): their menu starts with the first image."""
        return self.image_for(None) if self.records.boot_server is not None else None

    def boot_mode_for(self, device: Device | None) -> str:
        school = self.schools.get(device.school) if device and device.school else None
        return (device and device.boot_mode) or (school and school.boot_mode) or self.defaults.boot_mode

    def kernel_args_for(self, device: Device | None) -> str:
        school = self.schools.get(device.school) if device and device.school else None
        parts = (self.defaults.kernel_args, school.kernel_args if school else "",
                 device.kernel_args if device else "")
        return " ".join(p for p in parts if p)

    def kernel_version_for(self, device: Device | None) -> str | None:
        """The kernel version to boot (device → school → organisation), None for the image's default."""
        school = self.schools.get(device.school) if device and device.school else None
        return (device and device.kernel_version) or (school and school.kernel_version) \
            or self.defaults.kernel_version

    def type_for(self, device: Device | None) -> str | None:
        return (device and device.type) or self.defaults.type


Subscriber = Callable[[Inventory, Inventory], None]


class Model:
    """The live holder: ``.inventory`` is always a complete snapshot."""

    def __init__(self, inventory: Inventory):
        self.inventory = inventory
        self._subscribers: list[Subscriber] = []

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """callback(old, new) after every replacement; returns the unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def replace(self, inventory: Inventory) -> None:
        old, self.inventory = self.inventory, inventory
        for callback in list(self._subscribers):
            callback(old, inventory)

    def update(self, records: InventoryRecords | None = None, images: Mapping[str, object] | None = None,
               server_image: str | None | type(...) = ...) -> None:
        current = self.inventory
        self.replace(Inventory(records if records is not None else current.records,
                               images if images is not None else current.images,
                               current.server_image if server_image is ... else server_image))


def diff_records(old: InventoryRecords, new: InventoryRecords) -> tuple[list[Device], list[Device], list[Device]]:
    """(added, changed, removed) devices by MAC, through both indexes; a device object shared by both snapshots
    (an incremental source reuses them) is unchanged without comparing its fields."""
    if old is new:
        return [], [], []
    before, after = old.by_mac, new.by_mac
    added, changed = [], []
    for mac, device in after.items():
        was = before.get(mac)
        if was is None:
            added.append(device)
        elif was is not device and was != device:
            changed.append(device)
    removed = [d for mac, d in before.items() if mac not in after]
    return added, changed, removed
