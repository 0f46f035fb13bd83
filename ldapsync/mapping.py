"""Directory entries → model objects, through an attribute-map profile (pure, stdlib only).

An entry is (dn, {lower-case attribute name: (str values...)}). A profile says which entries
to ask for (filter, attributes) and maps one entry to a record: a device (one ``Device`` per
MAC), a school, the organisation, a boot server or an image. ``DirectoryView`` keeps the
records by entryUUID and assembles a whole ``InventoryRecords`` from them, resolving what spans
entries: a device's school (a DN reference, else the nearest school above it), duplicate
MACs and school names, and the boot-server level of Puavo's inheritance.

Images are inherited as puavo-rest does it (``Device#preferred_image``, verified against
puavo-web's rest/resources/{devices,hosts,boot_servers,boot_configurations}.rb; docs/ldap.md):
device → school → [netboot only: this boot server's puavoDeviceBootImage] → organisation →
[netboot only: this boot server's puavoDeviceImage] → (config images.default). The model holds
this server's entry as ``InventoryRecords.boot_server`` (``BootServerLevel``) and
``Device.netboot`` says which devices see it; ``rollout._assignment`` walks the chain at
answer time, so a change in a school, the organisation or this server's entry re-resolves no
device here. A device's own puavoDeviceBootImage is ignored (current puavo-rest serves the
preferred image), and so is puavoDeviceCurrentImage (what runs, not what to serve). Every
boot server entry's MACs are devices of type ``bootserver`` with the server's own image (→
organisation), as puavo-rest answers for a boot server's MAC; other boot servers' images
never reach any other device. bootserverd's own schema has no boot-server level
(``boot_server`` None: device → school → images.default → organisation).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

from bootserverd.model.objects import BOOT_MODES, DEVICE_TYPES, RELEASE_STATES, Defaults, Device, Rollout, School, normalize_mac

from bootserverd.model.objects import BootServerLevel, InventoryRecords
from bootserverd.model.validate import hostname_problem, kernel_version_problem

Attrs = Mapping[str, tuple[str, ...]]


@dataclass(frozen=True)
class Entry:
    dn: str
    attrs: Attrs

    def first(self, name: str) -> str | None:
        values = self.attrs.get(name.lower())
        return values[0].strip() if values and values[0].strip() else None

    def all(self, name: str) -> tuple[str, ...]:
        return tuple(v.strip() for v in self.attrs.get(name.lower(), ()) if v.strip())

    def classes(self) -> frozenset[str]:
        return frozenset(v.lower() for v in self.attrs.get("objectclass", ()))


# -- DNs (enough of RFC 4514 to compare and walk up; values are compared case-insensitively) --

def split_dn(dn: str) -> list[str]:
    """RDNs of ``dn``, normalised: lower case, no spaces around ',', '=' and '+'."""
    rdns, current, escaped = [], [], False
    for ch in dn:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            current.append(ch)
            escaped = True
        elif ch in ",;":
            rdns.append("".join(current))
            current = []
        else:
            current.append(ch)
    rdns.append("".join(current))
    out = []
    for rdn in rdns:
        parts = [p.strip() for p in rdn.split("+")]
        out.append("+".join("=".join(x.strip() for x in p.split("=", 1)) for p in parts).lower())
    return [r for r in out if r]


def normalize_dn(dn: str) -> str:
    return ",".join(split_dn(dn))


def ancestors(dn: str) -> tuple[str, ...]:
    """Normalised DNs above ``dn``, nearest first."""
    rdns = split_dn(dn)
    return tuple(",".join(rdns[i:]) for i in range(1, len(rdns)))


def rdn_value(dn: str) -> str:
    first = dn.split(",", 1)[0]
    return first.split("=", 1)[1].strip() if "=" in first else first


# -- records --

@dataclass(frozen=True)
class DeviceRecord:
    dn: str                           # normalised
    devices: tuple[Device, ...]       # one per MAC, school still None
    school_ref: str | None            # normalised DN of the school entry, when the entry names one
    ancestors: tuple[str, ...]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SchoolRecord:
    dn: str
    school: School
    boot_servers: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class OrganisationRecord:
    dn: str
    defaults: Defaults
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerRecord:
    """A boot server entry (Puavo). When it is this server's, its boot image and image are the
    ``BootServerLevel`` of inheritance; its MACs are devices (type bootserver) in every case."""
    dn: str
    hostname: str
    image: str | None                 # puavoDeviceImage: the server's own, the netboot last resort
    schools: tuple[str, ...]          # normalised DNs of the schools it serves
    boot_image: str | None = None     # puavoDeviceBootImage: netboot devices' and unknown MACs' image
    devices: tuple[Device, ...] = ()  # one per macAddress of the server itself
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageRecord:
    dn: str
    name: str
    release: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Skipped:
    dn: str
    reason: str


Record = DeviceRecord | SchoolRecord | OrganisationRecord | ServerRecord | ImageRecord | Skipped


# -- field helpers: each returns (value, warning or None) --

def _choice(entry: Entry, attr: str, choices: tuple[str, ...]) -> tuple[str | None, str | None]:
    value = entry.first(attr)
    if value is None:
        return None, None
    if value.lower() in choices:
        return value.lower(), None
    return None, f"{attr} {value!r} is not one of {', '.join(choices)}; ignored"


def _bool(entry: Entry, attr: str) -> tuple[bool, str | None]:
    value = entry.first(attr)
    if value is None or value.upper() == "TRUE":
        return True, None
    if value.upper() == "FALSE":
        return False, None
    return True, f"{attr} {value!r} is not TRUE or FALSE; taken as TRUE"


def _ipv4(entry: Entry, attr: str) -> tuple[str | None, str | None]:
    value = entry.first(attr)
    if value is None:
        return None, None
    try:
        return str(ipaddress.IPv4Address(value)), None
    except ValueError:
        return None, f"{attr} {value!r} is not an IPv4 address; ignored"


def _macs(entry: Entry) -> tuple[list[str], list[str]]:
    macs, bad = [], []
    for value in entry.all("macAddress"):
        try:
            mac = normalize_mac(value)
        except ValueError:
            bad.append(value)
            continue
        if mac not in macs:
            macs.append(mac)
    return macs, bad


def _rollout(entry: Entry) -> tuple[str | None, Rollout | None, list[str]]:
    """bootserverd's next image and rollout attributes, as the YAML inventory's
    ``next_image`` and ``rollout: {percent, hosts, groups}``."""
    warnings: list[str] = []
    percent = 0.0
    text = entry.first("bootserverdRolloutPercent")
    if text is not None:
        try:
            percent = float(text.rstrip("%"))
            if not 0.0 <= percent <= 100.0:       # also false for nan
                raise ValueError
        except ValueError:
            warnings.append(f"bootserverdRolloutPercent {text!r} is not a number from 0 to 100; taken as 0")
            percent = 0.0
    hosts = []
    for host in entry.all("bootserverdRolloutHost"):
        try:
            hosts.append(normalize_mac(host))
        except ValueError:
            hosts.append(host)
    groups = entry.all("bootserverdRolloutGroup")
    rollout = Rollout(percent=percent, hosts=tuple(hosts), groups=groups) \
        if text is not None or hosts or groups else None
    return entry.first("bootserverdNextImage"), rollout, warnings


class Profile:
    """The attribute map of one directory layout."""
    name = ""
    filter = "(objectClass=*)"
    attributes: tuple[str, ...] = ()
    # True: the directory has Puavo's boot-server level (InventoryRecords.boot_server is set)
    boot_server_level = False

    def map(self, entry: Entry) -> Record | None:
        """The record for ``entry``; None when the entry is not one this profile reads."""
        raise NotImplementedError

    def _device(self, entry: Entry, hostname: str | None, attrs: dict[str, str],
                image: str | None, school_ref: str | None, enabled: bool = True,
                warnings: list[str] | None = None, **fields) -> Record:
        warnings = list(warnings or ())
        dn = normalize_dn(entry.dn)
        macs, bad = _macs(entry)
        for value in bad:
            warnings.append(f"macAddress {value!r} is not a MAC address; ignored")
        if not macs:
            return Skipped(normalize_dn(entry.dn), "no valid macAddress; entry ignored" + "".join(f" ({w})" for w in warnings))
        if hostname is not None and hostname_problem(hostname):
            warnings.append(f"hostname {hostname!r} is not a valid host name; ignored")
            hostname = None
        device_type, w1 = _choice(entry, attrs["type"], DEVICE_TYPES)
        boot_mode, w2 = _choice(entry, attrs["boot_mode"], BOOT_MODES)
        ip, w3 = _ipv4(entry, "ipHostNumber")
        warnings += [w for w in (w1, w2, w3) if w]
        kernel_args = entry.first(attrs["kernel_args"]) or ""
        kernel_version = entry.first(attrs["kernel_version"])
        if kernel_version is not None and kernel_version_problem(kernel_version):
            warnings.append(f"{attrs['kernel_version']} {kernel_version!r} is not a kernel version; ignored")
            kernel_version = None
        devices = tuple(Device(mac=mac, hostname=hostname, type=device_type, ip=ip, image=image,
                               kernel_args=kernel_args, boot_mode=boot_mode, enabled=enabled,
                               kernel_version=kernel_version, **fields)
                        for mac in macs)
        return DeviceRecord(dn, devices, normalize_dn(school_ref) if school_ref else None,
                            ancestors(entry.dn), tuple(warnings))

    @staticmethod
    def _warn(record: Record, warnings: list[str | None]) -> Record:
        found = tuple(w for w in warnings if w)
        return dataclasses.replace(record, warnings=found) if found else record


class BootserverdProfile(Profile):
    """etc/ldap/bootserverd.schema: device + ieee802Device (+ ipHost) + bootserverdDevice,
    bootserverdSchoolSettings, bootserverdOrganizationSettings, bootserverdImageEntry."""
    name = "bootserverd"
    filter = ("(|(objectClass=bootserverdDevice)(objectClass=bootserverdSchoolSettings)"
              "(objectClass=bootserverdOrganizationSettings)(objectClass=bootserverdImageEntry))")
    attributes = ("objectClass", "cn", "macAddress", "ipHostNumber", "bootserverdDeviceType",
                  "bootserverdImage", "bootserverdKernelArguments", "bootserverdBootMode",
                  "bootserverdEnabled", "bootserverdSchool", "bootserverdSchoolCode",
                  "bootserverdDefaultImage", "bootserverdBootServer", "bootserverdImageName",
                  "bootserverdReleaseState", "bootserverdKernelVersion", "bootserverdNextImage",
                  "bootserverdRolloutPercent", "bootserverdRolloutHost", "bootserverdRolloutGroup")
    _ATTRS = {"type": "bootserverdDeviceType", "boot_mode": "bootserverdBootMode",
              "kernel_args": "bootserverdKernelArguments", "kernel_version": "bootserverdKernelVersion"}

    def map(self, entry: Entry) -> Record | None:
        classes = entry.classes()
        dn = normalize_dn(entry.dn)
        if "bootserverddevice" in classes:
            # cn is the host name; when several, the one in the RDN
            rdn = rdn_value(entry.dn) if entry.dn.lower().startswith("cn=") else None
            hostname = rdn or entry.first("cn")
            enabled, warning = _bool(entry, "bootserverdEnabled")
            next_image, rollout, warnings = _rollout(entry)
            return self._device(entry, hostname, self._ATTRS, entry.first("bootserverdImage"),
                                entry.first("bootserverdSchool"), enabled, ([warning] if warning else []) + warnings,
                                next_image=next_image, rollout=rollout)
        if "bootserverdschoolsettings" in classes:
            code = entry.first("bootserverdSchoolCode")
            if code is None:
                return Skipped(normalize_dn(entry.dn), "school without bootserverdSchoolCode; entry ignored")
            boot_mode, warning = _choice(entry, "bootserverdBootMode", BOOT_MODES)
            next_image, rollout, warnings = _rollout(entry)
            school = School(name=code, image=entry.first("bootserverdDefaultImage"),
                            kernel_args=entry.first("bootserverdKernelArguments") or "", boot_mode=boot_mode,
                            next_image=next_image, rollout=rollout,
                            kernel_version=entry.first("bootserverdKernelVersion"))
            return self._warn(SchoolRecord(dn, school, entry.all("bootserverdBootServer")), [warning, *warnings])
        if "bootserverdorganizationsettings" in classes:
            boot_mode, w1 = _choice(entry, "bootserverdBootMode", BOOT_MODES)
            device_type, w2 = _choice(entry, "bootserverdDeviceType", DEVICE_TYPES)
            next_image, rollout, warnings = _rollout(entry)
            defaults = Defaults(image=entry.first("bootserverdDefaultImage"),
                                kernel_args=entry.first("bootserverdKernelArguments") or "",
                                boot_mode=boot_mode or "netboot", type=device_type,
                                next_image=next_image, rollout=rollout,
                                kernel_version=entry.first("bootserverdKernelVersion"))
            return self._warn(OrganisationRecord(dn, defaults), [w1, w2, *warnings])
        if "bootserverdimageentry" in classes:
            name = entry.first("bootserverdImageName")
            if name is None:
                return Skipped(normalize_dn(entry.dn), "image without bootserverdImageName; entry ignored")
            release, warning = _choice(entry, "bootserverdReleaseState", RELEASE_STATES)
            return self._warn(ImageRecord(dn, name, release or "released"), [warning])
        return None


class PuavoProfile(Profile):
    """Puavo's directory as it is: puavoDevice / puavoNetbootDevice / puavoLocalbootDevice,
    puavoSchool, puavoServer (boot servers) and puavoEduOrg (the organisation). Puavo has no
    staged-rollout attributes: devices move when their (inherited) image is changed.
    puavoDeviceCurrentImage (what a device runs) is not read: it never decides what to serve."""
    name = "puavo"
    boot_server_level = True
    DEVICE_CLASSES = frozenset({"puavodevice", "puavonetbootdevice", "puavolocalbootdevice"})
    filter = ("(|(objectClass=puavoDevice)(objectClass=puavoNetbootDevice)(objectClass=puavoLocalbootDevice)"
              "(objectClass=puavoServer)(objectClass=puavoSchool)(objectClass=puavoEduOrg))")
    attributes = ("objectClass", "cn", "puavoHostname", "macAddress", "ipHostNumber", "puavoDeviceType",
                  "puavoDeviceImage", "puavoDeviceBootImage", "puavoDeviceBootMode",
                  "puavoDeviceKernelArguments", "puavoDeviceKernelVersion", "puavoSchool")
    _ATTRS = {"type": "puavoDeviceType", "boot_mode": "puavoDeviceBootMode",
              "kernel_args": "puavoDeviceKernelArguments", "kernel_version": "puavoDeviceKernelVersion"}

    def map(self, entry: Entry) -> Record | None:
        classes = entry.classes()
        dn = normalize_dn(entry.dn)
        if "puavoserver" in classes:
            hostname = entry.first("puavoHostname")
            if hostname is None:
                return Skipped(normalize_dn(entry.dn), "puavoServer without puavoHostname; entry ignored")
            return self._server(entry, dn, hostname)
        if classes & self.DEVICE_CLASSES:
            # current puavo-rest: a device boots its preferred image; its own puavoDeviceBootImage
            # (read for thin clients by puavo-rest before 2020) is ignored, see docs/ldap.md
            return self._device(entry, entry.first("puavoHostname"), self._ATTRS, entry.first("puavoDeviceImage"),
                                entry.first("puavoSchool"), netboot="puavonetbootdevice" in classes)
        if "puavoschool" in classes:
            name = entry.first("cn")
            if name is None:
                return Skipped(normalize_dn(entry.dn), "puavoSchool without cn; entry ignored")
            boot_mode, warning = _choice(entry, "puavoDeviceBootMode", BOOT_MODES)
            school = School(name=name, image=entry.first("puavoDeviceImage"),
                            kernel_args=entry.first("puavoDeviceKernelArguments") or "", boot_mode=boot_mode,
                            kernel_version=entry.first("puavoDeviceKernelVersion"))
            return self._warn(SchoolRecord(dn, school), [warning])
        if "puavoeduorg" in classes:
            boot_mode, warning = _choice(entry, "puavoDeviceBootMode", BOOT_MODES)
            defaults = Defaults(image=entry.first("puavoDeviceImage"),
                                kernel_args=entry.first("puavoDeviceKernelArguments") or "",
                                boot_mode=boot_mode or "netboot",
                                kernel_version=entry.first("puavoDeviceKernelVersion"))
            return self._warn(OrganisationRecord(dn, defaults), [warning])
        return None

    @staticmethod
    def _server(entry: Entry, dn: str, hostname: str) -> ServerRecord:
        image = entry.first("puavoDeviceImage")
        macs, bad = _macs(entry)
        warnings = [f"macAddress {value!r} is not a MAC address; ignored" for value in bad]
        name = hostname if not hostname_problem(hostname) else None
        devices = tuple(Device(mac=mac, hostname=name, type="bootserver", image=image) for mac in macs)
        return ServerRecord(dn, hostname.lower(), image, tuple(normalize_dn(s) for s in entry.all("puavoSchool")),
                            boot_image=entry.first("puavoDeviceBootImage"), devices=devices,
                            warnings=tuple(warnings))


PROFILES: dict[str, Profile] = {p.name: p for p in (BootserverdProfile(), PuavoProfile())}


class DirectoryView:
    """Records by entryUUID → one ``InventoryRecords``, kept up to date incrementally.

    ``build`` costs what changed since the previous build (plus an O(devices) copy of the MAC
    index, a C-level dict copy), not a re-assembly of every entry: a first load of 10,000
    devices in batches, or one change in a big directory, must not stall the reactor. Schools,
    the organisation, boot servers and images are few and re-assembled when one of them
    changed; when that changes which DN names which school, every device's school is re-checked.
    Schools, the organisation and this boot server's entry reach devices by name at answer time
    (``rollout._assignment``), so a change in one of them rebuilds no device. A boot server
    entry is both: a head record (its images) and the holder of its own MACs (devices).
    """

    def __init__(self, profile: Profile, server_hostname: str | None = None):
        self.profile = profile
        self.server_hostname = server_hostname.lower() if server_hostname else None
        self.records: dict[str, Record] = {}
        self._others: dict[str, Record] = {}          # the records that are not devices
        self._warnings: dict[str, tuple[str, ...]] = {}   # uuid → problem lines of that entry alone
        self._dirty: set[str] = set()                 # device uuids put or deleted since the last build
        self._others_dirty = True
        # as of the last build
        self._resolved: dict[str, tuple[str | None, tuple[Device, ...]]] = {}   # uuid → (school, devices)
        self._claims: dict[str, dict[str, str]] = {}  # MAC → {uuid: dn} of every device entry naming it
        self._devices: dict[str, Device] = {}         # MAC → the device the InventoryRecords holds
        self._mac_problems: dict[str, tuple[str, ...]] = {}
        self._school_name: dict[str, str] = {}        # school DN → name
        self._head: tuple = ({}, Defaults(), {}, (), None)  # schools, defaults, releases, problems, boot server

    def put(self, uuid: str, dn: str, attrs: Attrs) -> None:
        self.put_record(uuid, self.profile.map(Entry(dn, attrs)))

    def put_record(self, uuid: str, record: Record | None) -> None:
        """``record``: ``profile.map`` of the entry, computed elsewhere (the consumer thread)."""
        old = self.records.pop(uuid, None)
        self._others.pop(uuid, None)
        self._warnings.pop(uuid, None)
        if record is not None:
            self.records[uuid] = record
            if isinstance(record, Skipped):
                self._warnings[uuid] = (f"{record.dn}: {record.reason}",)
            elif getattr(record, "warnings", ()):
                self._warnings[uuid] = tuple(f"{record.dn}: {w}" for w in record.warnings)
            if not isinstance(record, (DeviceRecord, Skipped)):
                self._others[uuid] = record
        for one in (old, record):
            if isinstance(one, (DeviceRecord, ServerRecord)):    # a server's own MACs are devices
                self._dirty.add(uuid)
            if one is not None and not isinstance(one, (DeviceRecord, Skipped)):
                self._others_dirty = True

    def delete(self, uuid: str) -> None:
        self.put_record(uuid, None)

    def build(self) -> tuple[InventoryRecords, tuple[str, ...]]:
        """The InventoryRecords, and one problem line per entry ignored or partly ignored."""
        dirty, self._dirty = self._dirty, set()
        if self._others_dirty:
            self._others_dirty = False
            old_names = self._school_name
            self._head = self._assemble_others()
            if self._school_name != old_names:        # a school appeared, went or was renamed
                dirty |= {uuid for uuid, (name, _) in self._resolved.items() if uuid not in dirty and
                          self._school_of(self.records[uuid], self._school_name) != name}
        touched: set[str] = set()
        for uuid in dirty:
            _, before = self._resolved.pop(uuid, (None, ()))
            for device in before:
                self._claims[device.mac].pop(uuid, None)
                touched.add(device.mac)
            record = self.records.get(uuid)
            if isinstance(record, ServerRecord):
                name, devices = None, record.devices
            elif isinstance(record, DeviceRecord):
                name = self._school_of(record, self._school_name)
                devices = tuple(dataclasses.replace(d, school=name) if name else d for d in record.devices)
            else:
                continue
            self._resolved[uuid] = (name, devices)
            for device in devices:
                self._claims.setdefault(device.mac, {})[uuid] = record.dn
                touched.add(device.mac)
        for mac in touched:
            self._settle(mac)
        schools, defaults, releases, head_problems, boot_server = self._head
        problems = list(head_problems)
        for lines in self._warnings.values():
            problems += lines
        for lines in self._mac_problems.values():
            problems += lines
        directory = InventoryRecords.from_index(self._devices, schools=MappingProxyType(schools), defaults=defaults,
                                                releases=MappingProxyType(releases), boot_server=boot_server)
        return directory, tuple(problems)

    def _settle(self, mac: str) -> None:
        """Who holds ``mac`` now: of the entries naming it, a boot server's (its entry is the
        authority on its own network cards), else the one with the smallest DN."""
        claims = self._claims.get(mac)
        if not claims:
            self._claims.pop(mac, None)
            self._devices.pop(mac, None)
            self._mac_problems.pop(mac, None)
            return
        keep = min(claims, key=lambda uuid: (not isinstance(self.records.get(uuid), ServerRecord),
                                             claims[uuid], uuid))
        self._devices[mac] = next(d for d in self._resolved[keep][1] if d.mac == mac)
        others = sorted(claims[uuid] for uuid in claims if uuid != keep)
        if others:
            self._mac_problems[mac] = tuple(f"{dn}: MAC {mac} is also {claims[keep]}; ignored" for dn in others)
        else:
            self._mac_problems.pop(mac, None)

    def _assemble_others(self) -> tuple:
        """Schools, defaults and images from the (few) records that are not devices."""
        problems: list[str] = []
        schools_by_dn: dict[str, School] = {}
        by_name: dict[str, str] = {}
        organisations: list[OrganisationRecord] = []
        servers: list[ServerRecord] = []
        images: dict[str, ImageRecord] = {}
        for record in self._others.values():
            if isinstance(record, SchoolRecord):
                schools_by_dn[record.dn] = record.school
            elif isinstance(record, OrganisationRecord):
                organisations.append(record)
            elif isinstance(record, ServerRecord):
                servers.append(record)
            elif isinstance(record, ImageRecord):
                other = images.get(record.name)
                if other is not None:
                    problems.append(f"{max(record.dn, other.dn)}: image {record.name} is also "
                                    f"{min(record.dn, other.dn)}; ignored")
                if other is None or record.dn < other.dn:
                    images[record.name] = record
        schools: dict[str, School] = {}
        for dn in sorted(schools_by_dn):
            school = schools_by_dn[dn]
            if school.name in by_name:
                problems.append(f"{dn}: school name {school.name!r} is also {by_name[school.name]}; ignored")
                continue
            by_name[school.name] = dn
            schools[school.name] = school
        self._school_name = {dn: s.name for dn, s in schools_by_dn.items() if by_name.get(s.name) == dn}
        defaults = self._defaults(organisations, problems)
        boot_server = self._boot_server(servers, problems) if self.profile.boot_server_level else None
        return schools, defaults, {n: r.release for n, r in images.items()}, tuple(problems), boot_server

    @staticmethod
    def _school_of(record: Record | None, school_name: Mapping[str, str]) -> str | None:
        if not isinstance(record, DeviceRecord):
            return None
        if record.school_ref is not None:
            return school_name.get(record.school_ref)
        for dn in record.ancestors:
            if dn in school_name:
                return school_name[dn]
        return None

    @staticmethod
    def _defaults(organisations: list[OrganisationRecord], problems: list[str]) -> Defaults:
        organisations.sort(key=lambda r: (len(split_dn(r.dn)), r.dn))
        for extra in organisations[1:]:
            problems.append(f"{extra.dn}: a second organisation entry (using {organisations[0].dn}); ignored")
        return organisations[0].defaults if organisations else Defaults()

    def _boot_server(self, servers: list[ServerRecord], problems: list[str]) -> BootServerLevel:
        """This server's level; an empty one (the chain skips it) when its entry is missing."""
        server = self._this_server(servers)
        if server is None:
            if servers:
                problems.append(f"no puavoServer entry has puavoHostname {self.server_hostname or '(unset)'} "
                                "(inventory.ldap.server_hostname): netboot devices and unregistered clients "
                                "get no boot server image")
            return BootServerLevel()
        return BootServerLevel(boot_image=server.boot_image, image=server.image)

    def _this_server(self, servers: Iterable[ServerRecord]) -> ServerRecord | None:
        if not self.server_hostname:
            return None
        short = self.server_hostname.split(".", 1)[0]
        for server in sorted(servers, key=lambda s: s.dn):
            if server.hostname in (self.server_hostname, short) or server.hostname.split(".", 1)[0] == short:
                return server
        return None
