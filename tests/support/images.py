"""Real squashfs images for tests, built with mksquashfs like docs/images.md says."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


def build_image(target: Path, kernel_version: str = "6.1.0-18-amd64", kernel: bytes | None = None,
                initrd: bytes | None = None, extra: dict[str, bytes] | None = None,
                links: bool = True, more_kernels: dict[str, tuple[bytes, bytes]] | None = None) -> Path:
    """Write a squashfs at ``target`` with /boot/vmlinuz-<v>, /boot/initrd.img-<v> (and links);
    ``more_kernels``: version → (kernel, initrd) bytes of further pairs (the links stay on <v>)."""
    kernel = kernel if kernel is not None else b"kernel " + os.urandom(64 << 10)
    initrd = initrd if initrd is not None else b"initrd " + os.urandom(256 << 10)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "root"
        boot = root / "boot"
        boot.mkdir(parents=True)
        if kernel_version is not None:
            (boot / f"vmlinuz-{kernel_version}").write_bytes(kernel)
            (boot / f"initrd.img-{kernel_version}").write_bytes(initrd)
            if links:
                os.symlink(f"vmlinuz-{kernel_version}", boot / "vmlinuz")
                os.symlink(f"initrd.img-{kernel_version}", boot / "initrd.img")
        for version, (more_kernel, more_initrd) in (more_kernels or {}).items():
            (boot / f"vmlinuz-{version}").write_bytes(more_kernel)
            (boot / f"initrd.img-{version}").write_bytes(more_initrd)
        for name, data in (extra or {}).items():
            path = root / name.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        partial = target.parent / f".{target.name}.partial"
        subprocess.run(["mksquashfs", str(root), str(partial), "-comp", "zstd", "-no-fragments",
                        "-mkfs-time", "0", "-all-time", "0", "-noappend", "-quiet", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL)
        os.replace(partial, target)
    old = os.stat(target).st_mtime - 60   # settled: older than any settle_seconds in tests
    os.utime(target, (old, old))
    return target
