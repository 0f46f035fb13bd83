#!/usr/bin/env python3
"""Build the demo's tiny squashfs image and TFTP root under .demo/ (git-ignored).

The image has the layout of a real one (/boot/vmlinuz-*, /boot/initrd.img-*, /boot/vmlinuz
link) with placeholder contents: enough to serve over TFTP, NBD and HTTP, not to boot.
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

NAME = "demo-2026-01-01-000000-amd64"
KERNEL = "6.1.0-demo-amd64"


def main() -> int:
    demo = Path(__file__).resolve().parent.parent / ".demo"
    images, tftp, state = demo / "images", demo / "tftp", demo / "state"
    for directory in (images, tftp, state):
        directory.mkdir(parents=True, exist_ok=True)
    (tftp / "hello.txt").write_text("Hello from the bootserverd demo TFTP root.\n")
    image = images / f"{NAME}.img"
    if image.exists():
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        (root / "boot").mkdir(parents=True)
        (root / "etc").mkdir()
        (root / "boot" / f"vmlinuz-{KERNEL}").write_bytes(b"demo kernel\n" + os.urandom(1 << 20))
        (root / "boot" / f"initrd.img-{KERNEL}").write_bytes(b"demo initrd\n" + os.urandom(4 << 20))
        os.symlink(f"vmlinuz-{KERNEL}", root / "boot" / "vmlinuz")
        os.symlink(f"initrd.img-{KERNEL}", root / "boot" / "initrd.img")
        (root / "etc" / "bootserverd-image").write_text(f"{NAME}\n")
        partial = images / f".{NAME}.img.partial"
        subprocess.run(["mksquashfs", str(root), str(partial), "-comp", "zstd", "-no-fragments",
                        "-mkfs-time", "0", "-all-time", "0", "-noappend", "-quiet", "-no-progress"],
                       check=True)
        partial.rename(image)
    print(f"built {image}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
