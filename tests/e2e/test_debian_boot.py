"""(d) A real Debian image boots from bootserverd alone with Debian's own initramfs: SeaBIOS +
iPXE ROM, kernel and initrd over HTTP from inside the squashfs, klibc ipconfig (ip=dhcp),
nbd-client's local-top/nbd reading the resolver's nbdroot=, a tmpfs overlay on the read-only
squashfs root, systemd to multi-user.target, where a unit prints the marker on the console.

Slow on a cold cache (tests/e2e/debian_image.py builds the image once); ~1-2 min warm."""

from __future__ import annotations

import re

import pytest

from tests.e2e.debian_image import FAILURES, MARKER, VERSION, debian_image
from tests.e2e.harness import DEVICE_MAC, HOSTNAME, BootLab

EXPECTED = f"{MARKER} hostname={HOSTNAME} version={VERSION} multi-user=active root=overlay"


@pytest.fixture(scope="module")
def image():
    return debian_image()


def test_debian_image_boots_with_its_own_initramfs_to_multi_user(tmp_path, image):
    with BootLab(tmp_path, image.path, image.name) as lab:
        result = lab.boot(timeout=300, firmware="bios", memory=1024, markers=(MARKER,), failures=FAILURES)
        assert result.marker is not None and EXPECTED in result.marker, lab.explain(result)
        console = "\n".join(result.console)
        # Debian's initramfs did the work, in this order: its nbd script, then our overlay
        assert "Setting up nbd-client" in console or "nbd0" in console, lab.explain(result)
        assert re.search(r"Reached target.*Multi-User System", console), lab.explain(result)
        log = lab.daemon.log()
        assert f"GET /boot/{image.name}/vmlinuz 200" in log, log
        assert f"GET /boot/{image.name}/initrd.img 200" in log, log
        assert re.search(rf"NBD 10\.47\.0\.\d+:\d+ connected to export '{re.escape(image.name)}'", log), log
        # the initramfs's klibc ipconfig got the device's lease: three DHCP clients, one lease
        acks = set(re.findall(r"ACK (10\.47\.0\.\d+) to " + re.escape(DEVICE_MAC), log))
        assert len(acks) == 1, log
        print(f"debian image: marker after {result.seconds:.1f} s")


def test_debian_image_boots_through_the_signed_chain_with_secure_boot_on(tmp_path, image):
    """Secure Boot enforced (OVMF with Microsoft's keys): shim → Debian's signed GRUB → the
    image's own signed kernel (linux-image-amd64) → Debian's initramfs → NBD root → multi-user."""
    with BootLab(tmp_path, image.path, image.name) as lab:
        result = lab.boot(timeout=400, firmware="uefi-sb", memory=1024, markers=(MARKER,), failures=FAILURES)
        assert result.marker is not None and EXPECTED in result.marker, lab.explain(result)
        console = "\n".join(result.console)
        assert "Secure boot enabled" in console, lab.explain(result)
        log = lab.daemon.log()
        fetched = re.findall(r"TFTP 10\.47\.0\.\d+:\d+ '([^']+)' .*: ok", log)
        assert fetched[:2] == ["shimx64.efi", "grubx64.efi"], log
        assert f"/images/{image.name}/vmlinuz" in fetched and f"/images/{image.name}/initrd.img" in fetched, log
        assert re.search(rf"NBD 10\.47\.0\.\d+:\d+ connected to export '{re.escape(image.name)}'", log), log
        print(f"debian image, secure boot: marker after {result.seconds:.1f} s")
