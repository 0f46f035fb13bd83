"""Pure pieces of the boot chain, tested without a guest: the boot report, populate-tftp, the
resolver's loader choice for iPXE ROMs, and the image builder's cpio and module order."""

from __future__ import annotations

import gzip
import subprocess
from ipaddress import IPv4Address

from bootserverd.boot.report import BOOT_GAP, STALL, BootReport, LiveSession, format_timeline
from bootserverd.tools.populate import Loader, populate
from bootserverd.boot.resolver import is_ipxe_loader
from dhcp.leases import Lease
from nbd.transmission import SessionRecord
from services.http.transfer import TransferRecord as HttpRecord
from tests.e2e.build_image import module_load_order, newc
from tftp.session import TransferRecord as TftpRecord

MAC = "52:54:00:00:00:01"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _ack(report, ip="10.0.0.5", mac=MAC, host="pc1"):
    report.dhcp_lease(Lease(IPv4Address(ip), b"k", mac, host, 9e9, "bound"))


def _tftp(name, ok=True, client="10.0.0.5"):
    return TftpRecord(client=client, port=2000, filename=name, mode="octet", size=100, bytes=100 if ok else 0,
                      seconds=0.5, blksize=1408, windowsize=1, options=(), retransmissions=0, ok=ok,
                      outcome="ok" if ok else "timed out").as_transfer()


def test_timeline_follows_one_boot_across_services():
    clock, live = Clock(), []
    report = BootReport(clock, lambda: live)
    _ack(report)
    clock.now += 1
    report.transfer(_tftp("pxelinux.0"))
    clock.now += 1
    report.transfer(HttpRecord(client="10.0.0.5", method="GET", path="/boot/img/vmlinuz", status=200,
                               start=0, length=10, size=10, sent=10, seconds=0.25).as_transfer())
    report.transfer(_tftp("other", client="10.9.9.9"))          # no lease: nobody's boot
    _ack(report)                                                     # the initramfs: same boot
    t = report.timeline(MAC)
    assert t["state"] == "in progress" and t["hostname"] == "pc1"
    assert [e["kind"] for e in t["events"]] == ["dhcp", "tftp", "http", "dhcp"]
    assert t["events"][1]["offset"] == 0.5                           # began 0.5 s before it ended
    live.append(LiveSession("10.0.0.5", "img", clock.now + 1, 4096))
    t = report.timeline(MAC)
    assert t["state"] == "root attached" and "NBD img attached" in t["events"][-1]["what"]
    text = format_timeline(t)
    assert "root attached" in text and "TFTP pxelinux.0 100 bytes" in text


def test_where_a_boot_stopped_and_when_a_new_one_starts():
    clock = Clock()
    report = BootReport(clock)
    _ack(report)
    report.transfer(_tftp("images/x/vmlinuz", ok=False))
    clock.now += STALL + 1
    t = report.timeline(MAC)
    assert t["state"] == "stopped after: TFTP images/x/vmlinuz 0 bytes: timed out"
    report.transfer(SessionRecord("10.0.0.5:999", "x", 10, 1, 3.0, "client closed").as_transfer())
    assert report.timeline(MAC)["state"] == "root attached"
    _ack(report)                                      # after the root: a new boot
    assert [e["kind"] for e in report.timeline(MAC)["events"]] == ["dhcp"]
    clock.now += BOOT_GAP + 1
    _ack(report)                                      # after a long quiet: a new boot too
    assert len(report.timeline(MAC)["events"]) == 1
    assert report.timeline("52:54:00:99:99:99") is None
    assert list(report.status()["recent"]) == [MAC]


def test_only_bound_leases_count():
    report = BootReport(Clock())
    report.dhcp_lease(Lease(IPv4Address("10.0.0.5"), b"k", MAC, None, 0, "released"))
    assert report.timeline(MAC) is None


def test_populate_links_or_copies_and_reports_missing(tmp_path):
    source = tmp_path / "pkg" / "loader.efi"
    source.parent.mkdir()
    source.write_bytes(b"loader")
    link = tmp_path / "pkg" / "link.efi"
    link.symlink_to(source)                    # like /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi
    loaders = (Loader("a.efi", str(link), "pkg", "x"), Loader("gone.0", str(tmp_path / "no"), "other", "y"))
    root = tmp_path / "tftp"
    first = populate(root, loaders)
    assert [what for _, what in first] == ["linked", "missing: install other"]
    assert not (root / "a.efi").is_symlink() and (root / "a.efi").read_bytes() == b"loader"
    assert populate(root, loaders)[0][1] == "up to date"


def test_ipxe_loaders_are_recognised():
    for name in ("undionly.kpxe", "undionly.kkpxe", "ipxe.efi", "snponly.efi", "x/ipxe-arm64.efi", "ipxe.lkrn"):
        assert is_ipxe_loader(name), name
    for name in ("pxelinux.0", "syslinux.efi", "grubnetx64.efi", "shimx64.efi"):
        assert not is_ipxe_loader(name), name


def test_newc_archive_unpacks_with_modes_and_links(tmp_path):
    tree = tmp_path / "tree"
    (tree / "bin").mkdir(parents=True)
    (tree / "init").write_text("#!/bin/sh\n")
    (tree / "init").chmod(0o755)
    (tree / "bin" / "sh").symlink_to("busybox")
    archive = newc(tree)
    assert archive.startswith(b"070701") and b"TRAILER!!!" in archive
    out = tmp_path / "out"
    out.mkdir()
    # busybox's cpio is the independent reader (busybox-static is in deps/apt)
    subprocess.run(["busybox", "cpio", "-id"], input=archive, cwd=out, check=True, capture_output=True)
    assert (out / "init").stat().st_mode & 0o777 == 0o755
    assert (out / "bin" / "sh").is_symlink() and str((out / "bin" / "sh").readlink()) == "busybox"
    assert gzip.decompress(gzip.compress(archive)) == archive


def test_modules_come_after_their_dependencies(tmp_path):
    def ko(name, depends):
        path = tmp_path / "kernel" / f"{name}.ko"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF\0license=GPL\0depends=" + depends.encode() + b"\0name=" + name.encode() + b"\0")
    ko("virtio_net", "net_failover,virtio")
    ko("net_failover", "failover")
    ko("failover", "")
    ko("virtio", "")
    order = [p.stem for p in module_load_order(tmp_path, ("virtio_net", "virtio"))]
    assert order == ["failover", "net_failover", "virtio", "virtio_net"]
