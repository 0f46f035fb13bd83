"""The YAML inventory file as an ``InventorySource`` (bootserverd.inventory.source): where
devices, schools and defaults come from on a site without a directory. It delivers whole
``InventoryRecords`` values on the reactor thread; the app swaps them into the model.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bootserverd.model.objects import (BOOT_MODES, DEVICE_TYPES, RELEASE_STATES, Defaults, Device,
                                       InventoryRecords, Rollout, School, normalize_mac)
from bootserverd.config.schema import Context, Problem, SchemaError, build, load_document
from bootserverd.model.validate import hostname_problem, kernel_version_problem

log = Logger(namespace="bootserverd.inventory")



def _mac(value: Any, ctx: Context) -> str:
    return normalize_mac(value)


def _hostname(value: Any, ctx: Context) -> str:
    problem = hostname_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _kernel_version(value: Any, ctx: Context) -> str:
    problem = kernel_version_problem(value)
    if problem:
        raise ValueError(problem)
    return str(value)


@dataclass(frozen=True)
class RolloutEntry:
    percent: float = field(default=0.0, metadata={"min": 0.0, "max": 100.0})
    hosts: tuple[str, ...] = ()           # hostnames or MACs
    groups: tuple[str, ...] = ()          # school names or device types


def _rollout(entry: RolloutEntry | None) -> Rollout | None:
    if entry is None:
        return None
    hosts = tuple(_canonical_host(h) for h in entry.hosts)
    return Rollout(percent=entry.percent, hosts=hosts, groups=tuple(entry.groups))


def _canonical_host(text: str) -> str:
    try:
        return normalize_mac(text)
    except ValueError:
        return str(text)


@dataclass(frozen=True)
class ImageEntry:
    release: str = field(default="released", metadata={"choices": RELEASE_STATES})


@dataclass(frozen=True)
class DeviceEntry:
    mac: str = field(metadata={"required": True, "parse": _mac})
    hostname: str | None = field(default=None, metadata={"parse": _hostname})
    type: str | None = field(default=None, metadata={"choices": DEVICE_TYPES})
    ip: IPv4Address | None = None
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str | None = field(default=None, metadata={"choices": BOOT_MODES})
    enabled: bool = True
    school: str | None = None
    next_image: str | None = None
    rollout: RolloutEntry | None = None
    kernel_version: str | None = field(default=None, metadata={"parse": _kernel_version})


@dataclass(frozen=True)
class SchoolEntry:
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str | None = field(default=None, metadata={"choices": BOOT_MODES})
    next_image: str | None = None
    rollout: RolloutEntry | None = None
    kernel_version: str | None = field(default=None, metadata={"parse": _kernel_version})


@dataclass(frozen=True)
class DefaultsEntry:
    image: str | None = None
    kernel_args: str = ""
    boot_mode: str = field(default="netboot", metadata={"choices": BOOT_MODES})
    type: str | None = field(default=None, metadata={"choices": DEVICE_TYPES})
    next_image: str | None = None
    rollout: RolloutEntry | None = None
    kernel_version: str | None = field(default=None, metadata={"parse": _kernel_version})


TOP_LEVEL = ("devices", "schools", "defaults", "images")


def parse_inventory(path: Path) -> InventoryRecords:
    """Read and validate an inventory file; raises SchemaError listing every problem."""
    try:
        data, lines = load_document(path)
    except OSError as exc:
        raise SchemaError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    except Exception as exc:
        mark = getattr(exc, "problem_mark", None)
        raise SchemaError([Problem(str(path), mark.line + 1 if mark else None, "",
                                   f"not valid YAML: {exc}")]) from None
    ctx = Context(path, lines)
    data = data if data is not None else {}
    if not isinstance(data, dict):
        raise SchemaError([Problem(str(path), 1, "", "must be a mapping with devices:, schools:, defaults:")])
    for key in sorted(set(map(str, data)) - set(TOP_LEVEL)):
        hint = difflib.get_close_matches(key, TOP_LEVEL, n=1)
        ctx.problem(key, "unknown key" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
    # Each part is converted on its own, keeping what is valid, so every problem shows at once.
    raw_devices = data.get("devices") or []
    if not isinstance(raw_devices, list):
        ctx.problem("devices", "must be a list of devices")
        raw_devices = []
    entries = {index: build(DeviceEntry, item, f"devices[{index}]", ctx) for index, item in enumerate(raw_devices)}
    entries = {index: entry for index, entry in entries.items() if entry is not None}
    schools = _parse_schools(data.get("schools"), ctx)
    defaults = build(DefaultsEntry, data.get("defaults"), "defaults", ctx) or DefaultsEntry()
    _check_unique(entries, schools, ctx)
    releases = _parse_releases(data.get("images"), ctx)
    if ctx.problems:
        raise SchemaError(ctx.problems)
    devices = tuple(Device(mac=e.mac, hostname=e.hostname, type=e.type, ip=str(e.ip) if e.ip else None,
                           image=e.image, kernel_args=e.kernel_args, boot_mode=e.boot_mode,
                           enabled=e.enabled, school=e.school, next_image=e.next_image,
                           rollout=_rollout(e.rollout), kernel_version=e.kernel_version)
                    for e in entries.values())
    return InventoryRecords(devices=devices, schools=MappingProxyType(schools),
                     defaults=Defaults(image=defaults.image, kernel_args=defaults.kernel_args,
                                       boot_mode=defaults.boot_mode, type=defaults.type,
                                       next_image=defaults.next_image, rollout=_rollout(defaults.rollout),
                                       kernel_version=defaults.kernel_version),
                     releases=MappingProxyType(releases))


def _parse_releases(data: Any, ctx: Context) -> dict[str, str]:
    """``images: {NAME: {release: testing|released|withdrawn}}``."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        ctx.problem("images", "must be a mapping of image name to its settings (release:)")
        return {}
    releases = {}
    for name, entry in data.items():
        parsed = build(ImageEntry, entry, f"images.{name}", ctx)
        if parsed is not None:
            releases[str(name)] = parsed.release
    return releases


def _parse_schools(data: Any, ctx: Context) -> dict[str, School]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        ctx.problem("schools", "must be a mapping of school name to its settings")
        return {}
    schools = {}
    for name, entry in data.items():
        parsed = build(SchoolEntry, entry, f"schools.{name}", ctx)
        if parsed is not None:
            schools[str(name)] = School(name=str(name), image=parsed.image,
                                        kernel_args=parsed.kernel_args, boot_mode=parsed.boot_mode,
                                        next_image=parsed.next_image, rollout=_rollout(parsed.rollout),
                                        kernel_version=parsed.kernel_version)
    return schools


def _check_unique(entries: dict[int, DeviceEntry], schools: dict[str, School], ctx: Context) -> None:
    seen: dict[str, dict[object, int]] = {"mac": {}, "hostname": {}, "ip": {}}
    for index, entry in entries.items():
        for key in seen:
            value = getattr(entry, key)
            if value is None:
                continue
            if value in seen[key]:
                ctx.problem(f"devices[{index}].{key}",
                            f"{value} is also used by devices[{seen[key][value]}]")
            else:
                seen[key][value] = index
        if entry.school and entry.school not in schools:
            ctx.problem(f"devices[{index}].school", f"school {entry.school!r} is not defined under schools:")


class YamlInventorySource:
    """An inventory file, re-read when it changes (checked every ``poll_interval``)."""

    def __init__(self, path: Path, poll_interval: float = 1.0, clock=None):
        self.path = path
        self.poll_interval = poll_interval
        self._clock = clock
        self._stamp = None
        self._deliver: Callable[[InventoryRecords], None] | None = None
        self._poller: LoopingCall | None = None
        self._last_problem: str | None = None

    def _file_stamp(self):
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def load(self) -> InventoryRecords:
        self._stamp = self._file_stamp()
        return parse_inventory(self.path)

    def start(self, deliver: Callable[[InventoryRecords], None]) -> None:
        self._deliver = deliver
        self._poller = LoopingCall(self._check)
        if self._clock is not None:
            self._poller.clock = self._clock
        self._poller.start(self.poll_interval, now=False)

    def stop(self) -> None:
        if self._poller is not None and self._poller.running:
            self._poller.stop()

    def reload(self) -> None:
        self._stamp = None
        self._check()

    def status(self) -> dict:
        return {"source": "yaml", "file": str(self.path), "problem": self._last_problem}

    def lag_seconds(self) -> float:
        return 0.0

    def _check(self) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            directory = parse_inventory(self.path)
        except SchemaError as exc:
            self._last_problem = str(exc).splitlines()[0] if str(exc) else "invalid"
            log.error("inventory {path} not applied, keeping the previous one:\n{problems}",
                      path=str(self.path), problems=str(exc))
            return
        self._last_problem = None
        if self._deliver is not None:
            self._deliver(directory)
