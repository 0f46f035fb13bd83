"""UEFI PCs as they leave the factory: Secure Boot on, Microsoft's keys enrolled (Debian's
OVMF_CODE_4M.ms.fd). The default UEFI loader is the signed chain: OVMF's PXE → shimx64.efi
(signed by Microsoft's UEFI CA) → grubx64.efi (Debian's signed grubnetx64) → the image's own
Debian-signed kernel, which GRUB verifies through shim → NBD root → marker. The same firmware
refuses Debian's unsigned ipxe.efi, so a pass is not Secure Boot being off by accident."""

from __future__ import annotations

import re

import pytest

from tests.e2e import grub_http
from tests.e2e.build_image import MARKER, VERSION
from tests.e2e.harness import HOSTNAME

EXPECTED = f"{MARKER} hostname={HOSTNAME} version={VERSION}"
TFTP_OK = r"TFTP 10\.47\.0\.\d+:\d+ '([^']+)' .*: ok"


def test_secure_boot_on_boots_through_shim_and_signed_grub(lab, tiny):
    result = lab.boot(timeout=180, firmware="uefi-sb")
    assert result.marker is not None and EXPECTED in result.marker, lab.explain(result)
    console = "\n".join(result.console)
    # the kernel saw Secure Boot enforced (it locks itself down only then)
    assert "Secure boot enabled" in console and "Lockdown:" in console, lab.explain(result)
    log = lab.daemon.log()
    fetched = re.findall(TFTP_OK, log)
    assert fetched[:2] == ["shimx64.efi", "grubx64.efi"], log
    # Debian's signed GRUB has no http module: the config's HTTP test fails quietly, TFTP carries
    # the kernel; the routine probes (shim's revocation lists, GRUB's .lst/.mod) are debug lines
    for name in (f"images/{tiny.name}/vmlinuz", f"images/{tiny.name}/initrd.img"):
        assert any(f.lstrip("/") == name for f in fetched), (name, log)
    assert "error:" not in console.split("Loading " + tiny.name)[-1].split("Linux version")[0], console
    assert "not found" not in log and "revocations" not in log, log
    assert re.search(rf"NBD 10\.47\.0\.\d+:\d+ connected to export '{re.escape(tiny.name)}'", log), log
    print(f"secure boot, signed chain: marker after {result.seconds:.1f} s")


@pytest.mark.parametrize("lab", [{"loaders": {"efi64": "ipxe.efi"}}], indirect=True)
def test_secure_boot_on_refuses_unsigned_ipxe(lab, tiny):
    result = lab.boot(timeout=60, firmware="uefi-sb", markers=("Access Denied",))
    assert result.marker is not None and "failed to load" in result.marker, lab.explain(result)
    log = lab.daemon.log()
    assert re.search(r"TFTP 10\.47\.0\.\d+:\d+ 'ipxe\.efi' .*: ok", log), log    # served, then refused
    assert "GET /ipxe/" not in log and "NBD 10.47" not in log, log


@pytest.mark.parametrize("lab", [{"loaders": {"efi64": grub_http.NAME}, "grub_http": True}], indirect=True)
def test_grub_with_http_reads_kernel_and_initrd_over_http(lab, tiny):
    """boot.grub_http: the rendered grub.cfg's `(http,server:port)/boot/...` with a GRUB that has
    http (built here; Secure Boot off, as it is unsigned): kernel and initrd never over TFTP."""
    grub_http.build(lab.tmp / "tftp")
    result = lab.boot(timeout=150, firmware="uefi")
    assert result.marker is not None and EXPECTED in result.marker, lab.explain(result)
    log = lab.daemon.log()
    assert f"GET /boot/{tiny.name}/vmlinuz 200" in log and f"GET /boot/{tiny.name}/initrd.img 200" in log, log
    assert not re.search(rf"TFTP .*images/{re.escape(tiny.name)}", log), log
    assert "/grub/grub.cfg-01-52-54-00-e2-e2-01" in log, log      # its own config, by MAC
