"""A clean Debian 12 root for the package tests and the e2e Debian image: debootstrap's minbase,
made once and cached in /var/cache/bootserverd-tests (outside the repo) as a tarball."""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import tarfile
from pathlib import Path

CACHE = Path("/var/cache/bootserverd-tests")
BASE = CACHE / "bookworm-minbase.tar"
MIRROR = "http://deb.debian.org/debian"


def minbase_tarball() -> Path:
    """The debootstrap minbase root as a tarball, made once (tests/integration/test_debian_package.py
    and tests/e2e/debian_image.py share it)."""
    if BASE.exists():
        return BASE
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".minbase.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # two test runs at once build it once
        if BASE.exists():
            return BASE
        staging = CACHE / "minbase.partial"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(staging), MIRROR],
                       check=True, stdout=subprocess.DEVNULL, timeout=900)
        with tarfile.open(f"{BASE}.partial", "w") as tar:
            tar.add(staging, arcname=".")
        Path(f"{BASE}.partial").rename(BASE)
        shutil.rmtree(staging, ignore_errors=True)
    return BASE
