"""A morning in the boot lab for the status page: one PC boots the tiny image to its marker,
a second one's image is not published, so it stops at the boot loader. Shared by the page's
end-to-end test and the screenshot kept in docs/ (``make ui-screenshot``)."""

from __future__ import annotations

import time

from tests.e2e.harness import DEVICE_MAC, HOSTNAME, SERVER_IP, BootLab, Qemu
from tests.e2e.build_image import MARKER

STOPPING_MAC = "52:54:00:e2:e2:02"
STOPPING_HOST = "e2e-pc2"
STALL = 5.0           # server.boot_stall_seconds: the stopped PC shows as stopped this soon
PAGE = f"http://{SERVER_IP}:8080"


def make_lab(tmp, tiny) -> BootLab:
    devices = [{"mac": DEVICE_MAC, "hostname": HOSTNAME, "type": "thinclient", "image": tiny.name},
               {"mac": STOPPING_MAC, "hostname": STOPPING_HOST, "type": "thinclient", "image": "e2etiny-unpublished"}]
    return BootLab(tmp, tiny.path, tiny.name, devices=devices,
                   server={"boot_stall_seconds": STALL, "booted_after_seconds": 1.0})


def morning(lab: BootLab, timeout: float = 150) -> None:
    """Boot the good PC to its marker, then the one that stops; wait until it counts as stopped."""
    result = lab.boot(timeout=timeout, firmware="bios")
    assert result.marker is not None and MARKER in result.marker, lab.explain(result)
    guest = Qemu(lab.qemu_argv(firmware="bios", mac=STOPPING_MAC))
    lab.guests.append(guest)
    wanted = f"GET /ipxe/{STOPPING_MAC.replace(':', '-')}.ipxe 200"
    deadline = time.monotonic() + timeout
    while wanted not in lab.daemon.log() and time.monotonic() < deadline and guest.proc.poll() is None:
        time.sleep(0.5)
    assert wanted in lab.daemon.log(), lab.daemon.log()
    time.sleep(2.0)                            # let it show its error; then it is switched off
    guest.stop()
    time.sleep(STALL + 1.0)
