"""InventoryRecords entries through the attribute-map profiles into the model, and on into the boot
configs they produce (ldapsync.mapping, bootserverd.boot.resolver); plus damaged snapshot files
(ldapsync.snapshot).

Invariants: mapping and assembly never raise; the InventoryRecords has one device per MAC, valid
host names and IPv4 addresses; every device's pxelinux/iPXE/GRUB config renders, and no
directory value can add a line to it (a newline in kernel arguments would let whoever
edits a device inject boot commands); snapshot.read raises only SnapshotError.
"""

from __future__ import annotations

import atexit
import ipaddress
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

from tests.fuzz import harness
from tests.fuzz.harness import Fdp

with harness.instrumented("ldapsync", "bootserverd.model", "bootserverd.boot.resolver"):
    from bootserverd.model.snapshot import Inventory, Model
    from ldapsync import snapshot
    from ldapsync.mapping import PROFILES, DirectoryView
    from bootserverd.model.validate import HOSTNAME

from tests.fuzz.world import make_resolver

SCRATCH = Path(tempfile.mkdtemp(prefix="bootserverd-fuzz-ldap-"))
atexit.register(shutil.rmtree, SCRATCH, True)
SNAPSHOT = SCRATCH / snapshot.FILENAME
RESOLVER = make_resolver()
IMAGES = {"img-a": SimpleNamespace(), "bookworm-2026-11-20-101500-amd64": SimpleNamespace()}
BASE = "dc=school,dc=test"
DNS = (f"cn=class-12,ou=Devices,ou=s1,{BASE}", f"puavoId=5,ou=Hosts,ou=s1,{BASE}",
       f"ou=s1,{BASE}", BASE, f"cn=srv,ou=Servers,{BASE}", f"cn=img,ou=Images,{BASE}", "")
CLASSES = {"bootserverd": ("device", "ieee802Device", "bootserverdDevice", "bootserverdSchoolSettings",
                           "bootserverdOrganizationSettings", "bootserverdImageEntry"),
           "puavo": ("puavoDevice", "puavoNetbootDevice", "puavoLocalbootDevice", "puavoServer",
                     "puavoSchool", "puavoEduOrg")}
VALUES = ("52:54:00:aa:00:01", "52-54-00-AA-00-02", "10.0.0.57", "TRUE", "FALSE", "thinclient",
          "laptop", "dualboot", "netboot", "img-a", "quiet splash", f"ou=s1,{BASE}", "s1", "srv",
          "released", "testing", "class-12", "")


def _entry(fdp: Fdp, profile):
    dn = fdp.pick(DNS)
    if fdp.byte() & 1:
        dn = fdp.text(60) + ("," + dn if dn else "")
    attrs: dict[str, list[str]] = {"objectclass": [fdp.pick(CLASSES[profile.name])]}
    for _ in range(fdp.byte() % 12):
        name = fdp.pick(profile.attributes).lower()
        value = fdp.pick(VALUES) if fdp.byte() & 1 else fdp.text(40)
        attrs.setdefault(name, []).append(value)
    return dn, {k: tuple(v) for k, v in attrs.items()}


def _check_directory(directory) -> None:
    macs = [d.mac for d in directory.devices]
    assert len(macs) == len(set(macs)), macs
    for device in directory.devices:
        assert device.hostname is None or HOSTNAME.match(device.hostname), device.hostname
        if device.ip is not None:
            ipaddress.IPv4Address(device.ip)
    model = Model(Inventory(directory, IMAGES, None))
    resolver = make_resolver()
    resolver.model = model
    for device in directory.devices[:4]:
        for fmt in ("pxelinux.cfg", "ipxe", "grub.cfg"):
            text = resolver.render(fmt, device.mac, "10.0.0.5").decode()
            for image in IMAGES:
                cmdline = resolver.cmdline(image, device)
                assert cmdline.isprintable(), f"control character in a kernel command line: {cmdline!r}"
                assert not set("|&;$`{}") & set(cmdline), f"script syntax in a kernel command line: {cmdline!r}"
            assert text


def _snapshot(data: bytes) -> None:
    SNAPSHOT.write_bytes(data)
    try:
        snapshot.read(SNAPSHOT)
    except snapshot.SnapshotError:
        pass


def one_input(data: bytes) -> None:
    fdp = Fdp(data)
    mode = fdp.byte()
    if mode & 1:
        _snapshot(fdp.rest())
        return
    profile = PROFILES["puavo" if mode & 2 else "bootserverd"]
    view = DirectoryView(profile, server_hostname=fdp.pick((None, "srv", "srv.school.test")))
    for n in range(1 + fdp.byte() % 6):
        dn, attrs = _entry(fdp, profile)
        if fdp.byte() % 5 == 0:
            view.delete(f"uuid-{n % 3}")
        view.put(f"uuid-{n}", dn, attrs)
    directory, problems = view.build()
    assert all(isinstance(p, str) for p in problems)
    _check_directory(directory)
