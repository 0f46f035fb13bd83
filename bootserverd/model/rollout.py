"""Staged rollout: which image a device should run now. Pure (stdlib only, no clock, no I/O).

An assignment (device, school or organisation defaults — the most specific level that names an
image; ``_assignment`` gives the order, Puavo's when the directory has a boot-server level) may
name a ``next_image`` and a ``Rollout``. Release states (inventory ``images:``):
- ``testing``: only the rollout's canaries (hosts, groups) get the next image — the burn-in;
- ``released``: canaries plus ``percent`` of the devices, chosen by a hash of the MAC salted
  with the next image's name (stable per device; widening keeps everyone already in);
- ``withdrawn``: nobody is moved to it; a withdrawn current image moves devices to the next
  image when there is one that is not withdrawn.
Every answer is a function of one model snapshot, so changes in the directory are live.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping

from bootserverd.model.objects import Device, Rollout


@dataclass(frozen=True)
class Choice:
    image: str | None           # what the device should run now
    assigned: str | None        # the assignment's image, before the rollout
    next_image: str | None
    in_rollout: bool
    reason: str


def bucket(mac: str, salt: str) -> float:
    """A number in [0, 100), uniform over MACs, fixed per (MAC, salt)."""
    digest = hashlib.sha256(f"{salt}|{mac}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2 ** 64 * 100.0


def release_of(releases: Mapping[str, str], image: str | None) -> str:
    return releases.get(image, "released") if image else "released"


def membership(rollout: Rollout | None, mac: str, hostname: str | None, groups: Iterable[str],
               salt: str, canaries_only: bool = False) -> tuple[bool, str]:
    """(in the rollout?, why) for one device."""
    if rollout is None:
        return False, "no rollout"
    if mac in rollout.hosts or (hostname and hostname in rollout.hosts):
        return True, "canary host"
    matched = [g for g in groups if g and g in rollout.groups]
    if matched:
        return True, f"canary group {matched[0]}"
    if canaries_only:
        return False, "next image is in testing (canaries only)"
    if rollout.percent > 0 and bucket(mac, salt) < rollout.percent:
        return True, f"in the first {rollout.percent:g}%"
    return False, f"outside the {rollout.percent:g}%"


def _assignment(inventory, device: Device | None):
    """The most specific level naming an image: (image, next_image, rollout, level name).

    Without a boot-server level (YAML, bootserverd's schema): device → school → the config's
    ``images.default`` → organisation defaults. With one (Puavo, as puavo-rest's
    ``Device#preferred_image`` and ``UnregisteredDevice``): device → school → [netboot devices
    and unregistered MACs: the boot server's boot image] → organisation → [the same: the boot
    server's image] → ``images.default`` as a last resort. Only the device, school and
    organisation levels can carry a next image and a rollout."""
    school = inventory.schools.get(device.school) if device and device.school else None
    boot_server = inventory.records.boot_server
    if boot_server is None:
        levels = ((device, "device"), (school, "school"), (inventory.server_image, "server"),
                  (inventory.defaults, "defaults"))
    else:
        netboot = device is None or device.netboot
        levels = ((device, "device"), (school, "school"),
                  (boot_server.boot_image if netboot else None, "boot server boot image"),
                  (inventory.defaults, "defaults"),
                  (boot_server.image if netboot else None, "boot server image"),
                  (inventory.server_image, "server"))
    for level, name in levels:
        if isinstance(level, str) or level is None:   # a bare image name: no rollout at that level
            if level:
                return level, None, None, name
        elif level.image:
            return level.image, level.next_image, level.rollout, name
    return None, None, None, "none"


def choose(inventory, device: Device | None, mac: str | None = None) -> Choice:
    """The image ``device`` (or an unregistered ``mac``) should run, with the reason."""
    mac = device.mac if device else mac
    assigned, next_image, rollout, level = _assignment(inventory, device)
    releases = inventory.records.releases
    if not next_image or next_image == assigned:
        return Choice(assigned, assigned, None, False, f"assigned by {level}")
    next_state = release_of(releases, next_image)
    if next_state == "withdrawn":
        return Choice(assigned, assigned, next_image, False, f"next image {next_image} is withdrawn")
    if next_image not in inventory.images:
        return Choice(assigned, assigned, next_image, False, f"next image {next_image} is not published here")
    if release_of(releases, assigned) == "withdrawn":
        return Choice(next_image, assigned, next_image, True, f"assigned image {assigned} is withdrawn")
    if mac is None:
        return Choice(assigned, assigned, next_image, False, "no MAC to place in the rollout")
    groups = [device.school, inventory.type_for(device)] if device else []
    inside, why = membership(rollout, mac, device.hostname if device else None, groups, salt=next_image,
                             canaries_only=next_state == "testing")
    return Choice(next_image if inside else assigned, assigned, next_image, inside, why)


def demand(inventory, reports: Mapping[str, str]) -> Counter:
    """(current → wanted) pairs with how many devices need each: ``reports`` maps MAC to the
    image the device said it runs. Pairs with nothing to change are left out."""
    pairs: Counter = Counter()
    for mac, current in reports.items():
        device = inventory.device(mac)
        wanted = choose(inventory, device, mac).image
        if current and wanted and current != wanted:
            pairs[(current, wanted)] += 1
    return pairs
