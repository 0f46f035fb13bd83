"""The boot report's stages and outcomes: what the status page and bootserverd_boots_total show."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from bootserverd.boot.report import BOOT_GAP, BootReport, LiveSession
from bootserverd.boot.stages import optional_file, stage_of
from dhcp.leases import Lease
from tests.support.classroom import Clock

MAC = "52:54:00:00:00:01"


def _ack(report, ip="10.0.0.5"):
    report.dhcp_lease(Lease(IPv4Address(ip), b"k", MAC, "pc1", 9e9, "bound"))


def test_stage_of_each_file():
    assert stage_of("http", "/boot/img/vmlinuz") == "kernel"
    assert stage_of("tftp", "images/img/initrd.img") == "kernel"
    assert stage_of("http", "/boot/img/linux") == "kernel"
    assert stage_of("tftp", "pxelinux.0") == "loader"
    assert stage_of("http", "/ipxe/52-54-00-00-00-01.ipxe") == "loader"
    assert stage_of("tftp", "/grub/grub.cfg-01-52-54-00-00-00-01") == "loader"
    assert stage_of("nbd", "img") == "root" and stage_of("dhcp", "") == "dhcp"


def test_outcomes_are_counted_once_each():
    clock, live, outcomes = Clock(), [], []
    report = BootReport(clock, lambda: live, stall=10, booted_after=5, on_outcome=outcomes.append)
    _ack(report)
    report.sweep()
    assert outcomes == []                                   # in progress: nothing yet
    live.append(LiveSession("10.0.0.5:1000", "img", clock.now + 1, 0))
    clock.now += 2
    assert report.timeline(MAC)["state"] == "root attached"
    report.sweep()
    report.sweep()
    assert outcomes == ["booted"]
    clock.now += 5
    t = report.timeline(MAC)
    assert t["state"] == "booted" and t["stage"] == "booted" and t["image"] == "img"
    live.clear()
    clock.now += 400
    _ack(report)                                            # the next morning: a new boot
    clock.now += 11                                         # ... that goes quiet after DHCP
    report.sweep()
    assert report.timeline(MAC)["state"].startswith("stopped") and report.timeline(MAC)["stage"] == "dhcp"
    assert outcomes == ["booted"]                           # shown as stopped; it may still attach
    clock.now += BOOT_GAP
    report.sweep()
    assert outcomes == ["booted", "stopped"]                # quiet so long: final


def test_an_unfinished_boot_replaced_by_a_new_one_counts_as_stopped():
    clock, outcomes = Clock(), []
    report = BootReport(clock, stall=60, on_outcome=outcomes.append)
    _ack(report)
    clock.now += 301                                        # quiet past BOOT_GAP, no sweep in between
    _ack(report)
    assert outcomes == ["stopped"]


def test_a_running_machine_renewing_its_lease_is_not_a_new_boot():
    clock, live = Clock(), []
    report = BootReport(clock, lambda: live, booted_after=5)
    _ack(report)
    live.append(LiveSession("10.0.0.5:1000", "img", clock.now + 1, 0))
    clock.now += 1800                                       # half the lease: the OS renews it
    report.dhcp_lease(Lease(IPv4Address("10.0.0.5"), b"k", MAC, "pc1", 9e9, "bound"), renewal=True)
    t = report.timeline(MAC)
    assert t["state"] == "booted" and [e["kind"] for e in t["events"]] == ["dhcp", "nbd"]
    clock.now += 120
    assert report.timeline(MAC)["state"] == "booted"        # not "stopped after: ACK"


@pytest.mark.parametrize("path,optional", [
    ("revocations_sku.efi", True), ("revocations_sbat.efi", True), ("shim_certificate_0.efi", True),
    ("/grub/x86_64-efi/command.lst", True), ("/grub/x86_64-efi/http.mod", True), ("/grub/grubenv", True),
    ("grubx64.efi", False), ("shimx64.efi", False), ("/grub/grub.cfg", False),
    ("/images/x/vmlinuz", False), ("pxelinux.cfg/default", False)])
def test_loader_probes_are_optional_files(path, optional):
    assert optional_file(path) is optional
