"""Debian's own systemd as PID 1 of a Debian root, for the package tests: the unit file, its
sandboxing, Restart=, the fd store and the maintainer scripts all as a school server runs them.

The root boots in new PID, mount and network namespaces (`unshare`): systemd is PID 1 there,
sees `container=other`, and its loopback is its own. Commands run in it through `nsenter`;
``close()`` kills its PID 1, which ends every process of the namespace.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

BOOT = """
set -e
mount --make-rprivate /
mount --bind "$1" "$1"          # the root a mount of its own, as systemd's namespacing needs
mount -t proc proc "$1/proc"
mount --rbind /sys "$1/sys"
mount --rbind /dev "$1/dev"
mount -t tmpfs tmpfs "$1/run"
mount -t tmpfs tmpfs "$1/tmp"
ip link set lo up
exec chroot "$1" /usr/bin/env -i container=other /lib/systemd/systemd
"""


class SystemdRoot:
    def __init__(self, root: Path, log: Path) -> None:
        self.root, self.log = root, log
        self.proc: subprocess.Popen | None = None
        self._out = None
        self.pid: int | None = None          # systemd's, as this side sees it

    def start(self, timeout: float = 90) -> None:
        self._out = open(self.log, "w")   # noqa: SIM115 (open while systemd runs)
        self.proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--net", "--propagation", "private",
                                      "sh", "-c", BOOT, "boot", str(self.root)],
                                     stdout=self._out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid is None:
            children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True,
                                      check=False).stdout.split()
            if children and Path(f"/proc/{children[0]}/exe").resolve().name == "systemd":
                self.pid = int(children[0])
            time.sleep(0.1)
        assert self.pid is not None, self.log.read_text()[-3000:]
        while time.monotonic() < deadline:
            state = self.run("systemctl is-system-running").stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.5)
        raise AssertionError(f"systemd did not finish starting: {state}")

    def run(self, script: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """A shell command inside the root, as root, with systemd as its PID 1."""
        return subprocess.run(self.enter("-m", "-p", "-r", "-w") + ["/bin/sh", "-c", script], capture_output=True,
                              text=True, timeout=timeout, check=False,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                   "DEBIAN_FRONTEND": "noninteractive"})

    def enter(self, *namespaces: str) -> list[str]:
        """The command prefix that runs a program of this side in the root's ``namespaces``."""
        return ["nsenter", "-t", str(self.pid), *namespaces]

    def close(self) -> None:
        if self.pid is not None:
            subprocess.run(["kill", "-9", str(self.pid)], check=False)
        if self.proc is not None:
            self.proc.wait(30)
        if self._out is not None:
            self._out.close()
