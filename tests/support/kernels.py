"""Debian's Secure Boot signed kernel, for the signature tests: the vmlinuz of the package
linux-image-amd64 points at now, from the end-to-end tests' cache (``apt-get download`` and
``dpkg-deb -x`` once, tests/e2e/debs.py), and a copy with its signature removed by sbsigntool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.e2e import debs


def debian_signed_kernel() -> Path:
    package = debs.memo("kernel-package", debs.kernel_package)     # linux-image-<version>
    return debs.unpacked(debs.download(package)) / "boot" / f"vmlinuz-{package[len('linux-image-'):]}"


def without_signature(kernel: Path, target: Path) -> Path:
    """A copy of ``kernel`` at ``target``, its signature removed (``sbattach --remove``)."""
    shutil.copyfile(kernel, target)
    subprocess.run(["sbattach", "--remove", str(target)], check=True, capture_output=True, timeout=120)
    return target
