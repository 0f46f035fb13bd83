"""A slow disk for one process: cgroup v1 blkio throttling of its reads (root; the io controller
of cgroup v2 is not enabled on this machine). The test moves the process it started into the
group and back out before removing it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

BLKIO = Path("/sys/fs/cgroup/blkio")


def device_of(path) -> str:
    """MAJ:MIN of the block device holding ``path``."""
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def available() -> bool:
    return (BLKIO / "blkio.throttle.read_iops_device").exists() and os.access(BLKIO, os.W_OK)


@contextlib.contextmanager
def throttled(pid: int, device: str, iops: int, name: str):
    group = BLKIO / name
    group.mkdir(exist_ok=True)
    try:
        (group / "cgroup.procs").write_text(str(pid))
        (group / "blkio.throttle.read_iops_device").write_text(f"{device} {iops}")
        yield
    finally:
        with contextlib.suppress(OSError):
            (group / "blkio.throttle.read_iops_device").write_text(f"{device} 0")
        for leftover in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):      # it may have exited meanwhile
                (BLKIO / "cgroup.procs").write_text(leftover)
        group.rmdir()
