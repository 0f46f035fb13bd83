"""`make demo-boot`: boot (a) for a person. Builds (or reuses) the tiny image, makes the two
namespaces, starts bootserverd and qemu, and shows the guest's serial console, then the
server's log and the device's boot timeline. Everything made is deleted at the end.

    python tests/e2e/demo_boot.py [--debian]    # --debian: the real Debian image, to multi-user
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e.harness import DEVICE_MAC, BootLab  # noqa: E402


def main(argv: list[str]) -> int:
    print("building the image (cached after the first run) ...", flush=True)
    if "--debian" in argv:
        from tests.e2e.debian_image import FAILURES, MARKER, debian_image
        image, boot = debian_image(), dict(timeout=300, memory=1024, markers=(MARKER,), failures=FAILURES)
    else:
        from tests.e2e.build_image import tiny_image
        image, boot = tiny_image(), dict(timeout=180)
    with tempfile.TemporaryDirectory(prefix="bootserverd-demo-") as tmp, \
            BootLab(Path(tmp), image.path, image.name) as lab:
        print(f"bootserverd serves DHCP, TFTP, HTTP and NBD in namespace {lab.server.name}; "
              f"qemu (TCG, SeaBIOS + iPXE ROM) boots {DEVICE_MAC} in {lab.client.name}\n", flush=True)
        result = lab.boot(firmware="bios", echo=lambda line: print("guest |", line, flush=True), **boot)
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
    sys.exit(main(sys.argv[1:]))
