"""`make demo-boot`: boot (a) for a person. Builds (or reuses) the tiny image, makes the two
namespaces, starts bootserverd and qemu, and shows the guest's serial console, then the
server's log and the device's boot timeline. Everything made is deleted at the end."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.build_image import tiny_image  # noqa: E402
from tests.e2e.harness import DEVICE_MAC, BootLab  # noqa: E402


def main() -> int:
    print("building the tiny image (cached after the first run) ...", flush=True)
    image = tiny_image()
    with tempfile.TemporaryDirectory(prefix="bootserverd-demo-") as tmp, \
            BootLab(Path(tmp), image.path, image.name) as lab:
        print(f"bootserverd serves DHCP, TFTP, HTTP and NBD in namespace {lab.server.name}; "
              f"qemu (TCG, SeaBIOS + iPXE ROM) boots {DEVICE_MAC} in {lab.client.name}\n", flush=True)
        result = lab.boot(timeout=180, firmware="bios", echo=lambda line: print("guest |", line, flush=True))
        print("\n--- bootserverd log ---")
        print(lab.daemon.log())
        print("\n--- bootserverd status --device", DEVICE_MAC, "---")
        print(lab.cli("status", "--device", DEVICE_MAC).stdout)
        if result.marker:
            print(f"booted in {result.seconds:.1f} s: {result.marker}")
            return 0
        print(f"no marker after {result.seconds:.1f} s")
        return 1


if __name__ == "__main__":
    sys.exit(main())
