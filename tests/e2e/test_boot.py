"""A PC boots from bootserverd alone: qemu (TCG) PXE-boots in a client namespace, bootserverd
serves DHCP, TFTP, HTTP and NBD from the server namespace, and the guest prints the marker
from the NBD-mounted squashfs root with its DHCP hostname and the image's version."""

from __future__ import annotations

import re

import pytest

from tests.e2e.build_image import MARKER, VERSION
from tests.e2e.harness import DEVICE_MAC, HOSTNAME

EXPECTED = f"{MARKER} hostname={HOSTNAME} version={VERSION}"


def _booted(lab, **kw):
    result = lab.boot(timeout=150, **kw)
    assert result.marker is not None and EXPECTED in result.marker, lab.explain(result)
    log = lab.daemon.log()
    assert re.search(r"NBD 10\.47\.0\.\d+:\d+ connected to export 'e2etiny-", log), log
    return result, log


def test_bios_ipxe_rom_kernel_and_initrd_over_http(lab, tiny):
    result, log = _booted(lab, firmware="bios")
    assert f"GET /boot/{tiny.name}/vmlinuz 200" in log
    assert f"GET /boot/{tiny.name}/initrd.img 200" in log
    assert "TFTP 10.47" not in log           # the iPXE ROM got a script: nothing over TFTP
    # the boot report saw it all: `bootserverd status --device MAC` prints the timeline
    done = lab.cli("status", "--device", DEVICE_MAC)
    assert done.returncode == 0, done.stdout + done.stderr
    timeline = done.stdout
    assert "last boot: root attached" in timeline, timeline
    assert re.search(r"dhcp\s+ok\s+ACK 10\.47\.0\.\d+ \(e2e-pc1\)", timeline), timeline
    for path in ("/ipxe/52-54-00-e2-e2-01.ipxe", f"/boot/{tiny.name}/vmlinuz", f"/boot/{tiny.name}/initrd.img"):
        assert f"HTTP {path}" in timeline, timeline
    assert f"NBD {tiny.name} " in timeline, timeline


@pytest.mark.parametrize("lab", [{"loaders": {"bios": "pxelinux.0"}}], indirect=True)
def test_bios_pxelinux_over_tftp(lab, tiny):
    result, log = _booted(lab, firmware="bios")
    for name in ("pxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-e2-e2-01",
                 f"images/{tiny.name}/vmlinuz", f"images/{tiny.name}/initrd.img"):
        assert re.search(rf"TFTP 10\.47\.0\.\d+:\d+ '{re.escape(name)}' .*: ok", log), name
    assert "GET /boot/" not in log


@pytest.mark.parametrize("lab", [{"loaders": {"bios": "lpxelinux.0"}}], indirect=True)
def test_bios_lpxelinux_kernel_and_initrd_over_http(lab, tiny):
    """lpxelinux.0: the loader and its config over TFTP, kernel and initrd over HTTP."""
    result, log = _booted(lab, firmware="bios")
    for name in ("lpxelinux.0", "ldlinux.c32", "pxelinux.cfg/01-52-54-00-e2-e2-01"):
        assert re.search(rf"TFTP 10\.47\.0\.\d+:\d+ '{re.escape(name)}' .*: ok", log), name
    assert f"GET /boot/{tiny.name}/vmlinuz 200" in log and f"GET /boot/{tiny.name}/initrd.img 200" in log, log
    assert not re.search(r"TFTP .*'images/", log), log


@pytest.mark.parametrize("lab", [{"loaders": {"efi64": "ipxe.efi"}}], indirect=True)
def test_uefi_ovmf_pxe_then_ipxe_efi_over_http(lab, tiny):
    result, log = _booted(lab, firmware="uefi")
    assert re.search(r"TFTP 10\.47\.0\.\d+:\d+ 'ipxe\.efi' .*: ok", log), log
    assert f"GET /boot/{tiny.name}/vmlinuz 200" in log


@pytest.mark.parametrize("lab", [{"loaders": {"efi64": "grubnetx64.efi"}}], indirect=True)
def test_uefi_ovmf_pxe_then_grub_over_tftp(lab, tiny):
    """OVMF's PXE → Debian's signed grubnetx64.efi → the grub.cfg bootserverd makes for this
    device → kernel and initrd over TFTP."""
    result, log = _booted(lab, firmware="uefi")
    fetched = re.findall(r"TFTP 10\.47\.0\.\d+:\d+ '([^']+)' .*: ok", log)
    assert "grubnetx64.efi" in fetched, log
    # grubnetx64 reads $prefix/grub.cfg (/grub/grub.cfg), which chains to the device's own
    assert "/grub/grub.cfg" in fetched and f"/grub/grub.cfg-01-{DEVICE_MAC}" in fetched, log
    assert "Boot from local disk" not in "\n".join(result.console)     # the device's entry, no menu
    for name in (f"images/{tiny.name}/vmlinuz", f"images/{tiny.name}/initrd.img"):
        assert any(f.lstrip("/") == name for f in fetched), (name, log)
    assert "GET /boot/" not in log
