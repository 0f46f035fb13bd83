"""Inventory objects: devices, schools, organisation defaults, rollouts and image names.

Pure (stdlib only). ``InventoryRecords`` is what an inventory source (the YAML file, the LDAP
replica) delivers; ``bootserverd.model.snapshot`` combines it with the published images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Mapping

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
    netboot: bool = False               # Puavo's puavoNetbootDevice: the boot server's levels apply (rollout.py)

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
class BootServerLevel:
    """This boot server's own directory entry (Puavo's puavoServer), as a level of inheritance.

    ``boot_image`` is what netboot devices and unregistered MACs boot after their school, before
    the organisation; ``image`` is their last resort after the organisation (and this server's
    own image). Devices that are not netboot devices never see either (see rollout._assignment)."""
    boot_image: str | None = None
    image: str | None = None


@dataclass(frozen=True)
class InventoryRecords:
    """What an InventorySource provides: devices, schools and organisation defaults."""
    devices: tuple[Device, ...] = ()
    schools: Mapping[str, School] = field(default_factory=lambda: MappingProxyType({}))
    defaults: Defaults = Defaults()
    # image name → release state (RELEASE_STATES); an image not named here is "released"
    releases: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # None: the source has no boot-server level (YAML, bootserverd's schema); else Puavo's order
    boot_server: BootServerLevel | None = None

    @cached_property
    def by_mac(self) -> Mapping[str, Device]:
        """MAC → device; computed once per InventoryRecords (``from_index`` hands it in ready)."""
        return MappingProxyType({d.mac: d for d in self.devices})

    @classmethod
    def from_index(cls, by_mac: Mapping[str, Device], **fields) -> "InventoryRecords":
        """InventoryRecords of ``by_mac``'s devices whose index is a copy of it: a source that keeps
        its devices by MAC (ldapsync) saves the reactor an O(devices) rebuild per change."""
        index = dict(by_mac)
        directory = cls(devices=tuple(index.values()), **fields)
        directory.__dict__["by_mac"] = MappingProxyType(index)   # what cached_property stores
        return directory


