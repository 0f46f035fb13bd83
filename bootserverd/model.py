"""The in-memory model: devices, schools, defaults and images as one immutable snapshot.

Every change builds a new ``Inventory`` and swaps it in whole (``Model.replace``), so a
protocol handler always sees one consistent version; subscribers hear about each swap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

DEVICE_TYPES = ("thinclient", "fatclient", "laptop", "wirelessaccesspoint", "server",
                "netstand", "ltspserver", "bootserver", "workstation", "printer", "other")
BOOT_MODES = ("netboot", "localboot", "dualboot")
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$")
# Puavo-style image names: <series>-<YYYY-MM-DD-HHMMSS>-<arch>
_PUAVO_NAME = re.compile(r"^(?P<series>.+)-(?P<version>\d{4}-\d{2}-\d{2}-\d{6})-(?P<arch>[a-z0-9_]+)$")
SAFE_IMAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def normalize_mac(text: str) -> str:
    """'AA-BB-CC-DD-EE-FF', 'aabb.ccdd.eeff' or 'aabbccddeeff' → 'aa:bb:cc:dd:ee:ff'."""
    lowered = str(text).strip().lower()
    if lowered.count(".") == 2:
        lowered = lowered.replace(".", "")
    if not _MAC.match(lowered):
        raise ValueError(f"not a MAC address: {text!r}")
    digits = lowered.replace(":", "").replace("-", "")
    return ":".join(digits[i:i + 2] for i in range(0, 12, 2))


def parse_image_name(name: str) -> tuple[str | None, str | None, str | None]:
    """(series, version, arch) from a Puavo-style name, or Nones for any other safe name."""
    match = _PUAVO_NAME.match(name)
    if not match:
        return None, None, None
    return match["series"], match["version"], match["arch"]


@dataclass(frozen=True)
class Rollout:
    """Who gets an assignment's ``next_image`` before everyone: canary hosts (hostname or
    MAC), groups (school or device type) and a percentage (stable per device: see rollout.py)."""
    percent: float = 0.0
    hosts: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()


RELEASE_STATES = ("testing", "released", "withdrawn")


@dataclass(frozen=True)
class Device:
    mac: str
    hostname: str | None = None
    type: str | None = None
    ip: str | None = None
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str | None = None
    enabled: bool = True
    school: str | None = None
    kernel_version: str | None = None   # Puavo's puavoDeviceKernelVersion: boot /boot/vmlinuz-<this>
    next_image: str | None = None       # staged rollout: see Rollout and bootserverd/rollout.py
    rollout: Rollout | None = None

    def label(self) -> str:
        """How logs name the device: 'aa:bb:..:ff (class-12, thinclient)'."""
        extra = ", ".join(x for x in (self.hostname, self.type) if x)
        return f"{self.mac} ({extra})" if extra else self.mac


@dataclass(frozen=True)
class School:
    name: str
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str | None = None
    next_image: str | None = None
    rollout: Rollout | None = None
    kernel_version: str | None = None


@dataclass(frozen=True)
class Defaults:
    """Organisation-wide defaults, the last step of inheritance."""
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str = "netboot"
    type: str | None = None
    next_image: str | None = None
    rollout: Rollout | None = None
    kernel_version: str | None = None


@dataclass(frozen=True)
class Directory:
    """What an InventorySource provides: devices, schools and organisation defaults."""
    devices: tuple[Device, ...] = ()
    schools: Mapping[str, School] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Defaults = Defaults()
    # image name → release state (RELEASE_STATES); an image not named here is "released"
    releases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @cached_property
    def by_mac(self) -> Mapping[str, Device]:
        """MAC → device; computed once per Directory (``from_index`` hands it in ready)."""
        return MappingProxyType({d.mac: d for d in self.devices})

    @classmethod
    def from_index(cls, by_mac: Mapping[str, Device], **fields) -> "Directory":
        """A Directory of ``by_mac``'s devices whose index is a copy of it: a source that keeps
        its devices by MAC (ldapsync) saves the reactor an O(devices) rebuild per change."""
        index = dict(by_mac)
        directory = cls(devices=tuple(index.values()), **fields)
        directory.__dict__["by_mac"] = MappingProxyType(index)   # what cached_property stores
        return directory


class Inventory:
    """One immutable snapshot of everything the protocols need to answer a client."""

    def __init__(self, directory: Directory, images: Mapping[str, object], server_image: str | None):
        self.directory = directory
        self.devices = directory.devices
        self.schools = directory.schools
        self.defaults = directory.defaults
        self.images = MappingProxyType(dict(images))
        self.server_image = server_image
        self._by_mac = directory.by_mac

    def device(self, mac: str) -> Device | None:
        return self._by_mac.get(mac)

    def image_for(self, device: Device | None) -> str | None:
        """Inheritance (device → school → boot server → organisation, in rollout._assignment),
        then the staged rollout: the assigned image, or its next image for devices in it."""
        from bootserverd.rollout import choose
        return choose(self, device).image

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

    def subscribe(self, callback: Subscriber) -> None:
        """callback(old, new) after every replacement."""
        self._subscribers.append(callback)

    def replace(self, inventory: Inventory) -> None:
        old, self.inventory = self.inventory, inventory
        for callback in list(self._subscribers):
            callback(old, inventory)

    def update(self, directory: Directory | None = None, images: Mapping[str, object] | None = None,
               server_image: str | None | type(...) = ...) -> None:
        current = self.inventory
        self.replace(Inventory(directory if directory is not None else current.directory,
                               images if images is not None else current.images,
                               current.server_image if server_image is ... else server_image))


def diff_devices(old: Iterable[Device], new: Iterable[Device]) -> tuple[list[Device], list[Device], list[Device]]:
    """(added, changed, removed) between two device lists, by MAC — for one log line each."""
    before = {d.mac: d for d in old}
    after = {d.mac: d for d in new}
    added = [d for mac, d in after.items() if mac not in before]
    changed = [d for mac, d in after.items() if mac in before and before[mac] != d]
    removed = [d for mac, d in before.items() if mac not in after]
    return added, changed, removed


def diff_directories(old: Directory, new: Directory) -> tuple[list[Device], list[Device], list[Device]]:
    """``diff_devices`` through both MAC indexes; a device object shared by both snapshots
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
