"""UEFI HTTP Boot end to end: Debian's OVMF (it has HttpBootDxe) with its PXE switched off by
fw_cfg (edk2 OvmfPkg/RUNTIME_CONFIG.md), so its boot entries are "UEFI HTTPv4/v6" only. The
firmware asks DHCP for a URL ("HTTPClient", option 93 = 16), GETs the first stage from
bootserverd's HTTP service, and nothing travels over TFTP.

What works and what does not (the resolver gives HTTP-boot firmware iPXE because of it):
- iPXE, Secure Boot off: firmware GETs ipxe.efi, iPXE does DHCP, gets its script, kernel and
  initrd over HTTP, root over NBD. Also in dhcp.mode proxy beside another DHCP server.
- Secure Boot on: the firmware refuses ipxe.efi ("Access Denied") and goes to its next entry.
- The signed chain (shim → Debian's GRUB 2.06) with Secure Boot on: both are verified and run,
  but GRUB takes its prefix from the boot URL, (http,10.47.0.1:8080)/grub, has no http module
  and stops at the grub> prompt without another request.
Holds /tmp/bootserverd-bench.lock while qemu runs (one qemu at a time on this machine)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time

import pytest
import yaml

from tests.e2e.build_image import FAIL, MARKER, VERSION
from tests.e2e.harness import (
    HOSTNAME,
    SERVER_IF,
    SERVER_IP,
    BootLab,
    BootResult,
    NsDaemon,
    Qemu,
)
from tests.support.netns import Netns, veth

# Only the HTTP boot entries stay (Debian's OVMF 2022.11 reads these two; it has no IPv6Support knob).
HTTP_ONLY = ["-fw_cfg", "name=opt/org.tianocore/IPv4PXESupport,string=no",
             "-fw_cfg", "name=opt/org.tianocore/IPv6PXESupport,string=no"]
URL = f"http://{SERVER_IP}:8080/tftp/ipxe.efi"
TFTP = re.compile(r"TFTP 10\.47\.0\.\d+:\d+ ")


@pytest.fixture
def lab(tmp_path, tiny, machine_lock):
    with BootLab(tmp_path, tiny.path, tiny.name) as lab:      # package defaults: efi64 = shimx64.efi
        yield lab


def http_boot(lab: BootLab, markers: tuple[str, ...], failures: tuple[str, ...] = (FAIL,),
              firmware: str = "uefi", timeout: float = 150) -> BootResult:
    """lab.boot with the firmware's PXE off: its first boot entry is UEFI HTTPv4."""
    guest = Qemu(lab.qemu_argv(firmware=firmware) + HTTP_ONLY)
    lab.guests.append(guest)
    try:
        found, line = guest.wait_for((*markers, *failures), timeout)
        seconds = time.monotonic() - guest.started
    finally:
        guest.stop()
    return BootResult(line if found in markers else None, seconds, guest.console)


def test_http_boot_ipxe_to_the_marker_nothing_over_tftp(lab, tiny):
    result = http_boot(lab, (MARKER,))
    assert result.marker and f"hostname={HOSTNAME} version={VERSION}" in result.marker, lab.explain(result)
    console, log = "\n".join(result.console), lab.daemon.log()
    assert ">>Start HTTP Boot over IPv4" in console and f"URI: {URL}" in console, console
    assert re.search(r"ACK 10\.47\.0\.\d+ to 52:54:00:e2:e2:01 \(e2e-pc1, thinclient\)", log), log
    # the first stage came over HTTP (the default signed chain is not sent: see the resolver)
    assert re.search(r"HTTP 10\.47\.0\.\d+ GET /tftp/ipxe\.efi 200", log), log
    assert "GET /ipxe/52-54-00-e2-e2-01.ipxe 200" in log, log
    assert f"GET /boot/{tiny.name}/vmlinuz 200" in log and f"GET /boot/{tiny.name}/initrd.img 200" in log
    assert not TFTP.search(log), log                          # nothing over TFTP at all


def test_http_boot_in_proxy_mode_beside_the_schools_dhcp_server(lab, tiny, tmp_path):
    """dhcp.mode proxy: dnsmasq gives the address, bootserverd only the "HTTPClient" proxy offer
    with the URL (EDK2: HttpOfferTypeDhcpOnly + HttpOfferTypeProxyIpUri)."""
    lab.daemon.stop()
    config = yaml.safe_load(lab.config.read_text())
    config["dhcp"] = {"enabled": True, "mode": "proxy", "interfaces": [SERVER_IF]}
    lab.config.write_text(yaml.safe_dump(config, sort_keys=False))
    lab.daemon = NsDaemon(lab.server, lab.config)
    lab.daemon.wait_for("bootserverd started", timeout=30)
    lab.daemon.wait_for(tiny.name, timeout=30)               # the image is published again
    with contextlib.ExitStack() as stack:
        school = Netns("e2ed")
        stack.callback(school.delete)
        veth(school, "d0", lab.client, "school")
        lab.client.ip("link", "set", "school", "master", "br0")
        school.ip("addr", "add", "10.47.0.2/24", "dev", "d0")
        dnsmasq = school.popen(["dnsmasq", "--no-daemon", "--port=0", "--interface=d0", "--bind-interfaces",
                                "--dhcp-range=10.47.0.160,10.47.0.170,12h", "--conf-file=/dev/null",
                                f"--dhcp-leasefile={tmp_path / 'dnsmasq.leases'}",
                                f"--pid-file={tmp_path / 'dnsmasq.pid'}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stack.callback(dnsmasq.wait, 10)
        stack.callback(dnsmasq.terminate)
        result = http_boot(lab, (MARKER,))
    assert result.marker and f"version={VERSION}" in result.marker, lab.explain(result)
    console, log = "\n".join(result.console), lab.daemon.log()
    assert re.search(r"Station IP address is 10\.47\.0\.1[67]\d", console), console   # dnsmasq's
    assert f"URI: {URL}" in console, console
    assert re.search(r"HTTP 10\.47\.0\.1[67]\d GET /tftp/ipxe\.efi 200", log), log
    assert not TFTP.search(log), log
    leases = tmp_path / "state" / "leases"
    assert not leases.exists() or not leases.read_text()      # proxy gives no addresses


def test_secure_boot_refuses_ipxe_over_http_boot(lab):
    result = http_boot(lab, ("Access Denied",), firmware="uefi-sb", timeout=90)
    assert result.marker is not None, lab.explain(result)
    assert 'failed to load Boot0001 "UEFI HTTPv4' in result.marker, result.marker
    assert re.search(r"GET /tftp/ipxe\.efi 200", lab.daemon.log())


def test_signed_chain_over_http_boot_stops_at_the_grub_prompt(lab):
    """Why the resolver never sends shim to HTTP-boot firmware: served in ipxe.efi's place,
    shim (Secure Boot on) fetches grubx64.efi beside it and both are verified, but Debian's
    GRUB 2.06 derives $prefix (http,10.47.0.1:8080)/grub from the boot URL and has no http
    module: it shows the grub> prompt and asks the server for nothing more."""
    served = lab.tmp / "tftp" / "ipxe.efi"
    served.unlink()                                  # a hard link to Debian's file: never write through it
    shutil.copyfile(lab.tmp / "tftp" / "shimx64.efi", served)
    result = http_boot(lab, ("Minimal BASH-like line editing",), firmware="uefi-sb", timeout=90)
    assert result.marker is not None, lab.explain(result)
    console = "\n".join(result.console)
    assert "Welcome to GRUB!" in console and "Access Denied" not in console, console
    time.sleep(3)                                    # GRUB's prompt is up: anything it would fetch, it has asked for
    log = lab.daemon.log()
    assert re.search(r"GET /tftp//grubx64\.efi 200", log), log    # shim: the URL's directory + "/grubx64.efi"
    after = log.split("grubx64.efi 200", 1)[1]
    assert "GET " not in after and not TFTP.search(after), after
