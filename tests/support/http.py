"""Helpers for the HTTP integration tests and benchmark: real squashfs images and the real
daemon (``python -m bootserverd run``) on a free loopback port, as a child process."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.files import sha256  # noqa: F401  (callers import it from here)
from tests.support.procs import end

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# The daemon's interpreter; BOOTSERVERD_TEST_PYTHON runs it on another one (e.g. Debian 12's Twisted 22.4).
PYTHON = os.environ.get("BOOTSERVERD_TEST_PYTHON") or (
    str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable)
# Diff-friendly settings (docs/images.md): fixed times, no fragments, zstd.
MKSQUASHFS = ["-comp", "zstd", "-no-fragments", "-mkfs-time", "0", "-all-time", "0",
              "-noappend", "-quiet", "-no-progress"]


def make_tree(root: Path, seed: int, files: int = 40, size: int = 64 << 10, kernel_tag: str = "1") -> None:
    """A root filesystem with the boot layout and ``files`` pseudo-random files."""
    rng = random.Random(seed)
    (root / "boot").mkdir(parents=True, exist_ok=True)
    (root / "usr" / "lib").mkdir(parents=True, exist_ok=True)
    (root / "boot" / "vmlinuz-6.1.0-test").write_bytes(b"kernel " + kernel_tag.encode() + rng.randbytes(256 << 10))
    (root / "boot" / "initrd.img-6.1.0-test").write_bytes(b"initrd " + rng.randbytes(512 << 10))
    for link, target in (("vmlinuz", "vmlinuz-6.1.0-test"), ("initrd.img", "initrd.img-6.1.0-test")):
        if not (root / "boot" / link).is_symlink():
            os.symlink(target, root / "boot" / link)
    for index in range(files):
        (root / "usr" / "lib" / f"lib{index:03}.so").write_bytes(rng.randbytes(size))


def change_tree(root: Path, seed: int, count: int = 3) -> None:
    """Change a few files (new contents) and add one: what an image update looks like."""
    rng = random.Random(seed)
    libs = sorted((root / "usr" / "lib").iterdir())
    for path in rng.sample(libs, min(count, len(libs))):
        path.write_bytes(rng.randbytes(path.stat().st_size))
    (root / "usr" / "lib" / "new-feature.so").write_bytes(rng.randbytes(100 << 10))


def mksquashfs(tree: Path, image: Path) -> Path:
    partial = image.with_name(f".{image.name}.partial")
    subprocess.run(["mksquashfs", str(tree), str(partial), *MKSQUASHFS], check=True)
    partial.rename(image)
    return image


def build_pair(work: Path, images: Path, old: str, new: str, files: int = 40, size: int = 64 << 10):
    """Two images of one series: ``new`` is ``old`` with a few files changed."""
    tree = work / "tree"
    make_tree(tree, seed=1, files=files, size=size)
    mksquashfs(tree, images / f"{old}.img")
    change_tree(tree, seed=2)
    mksquashfs(tree, images / f"{new}.img")
    shutil.rmtree(tree)
    return images / f"{old}.img", images / f"{new}.img"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """bootserverd with only HTTP on, over an image directory and a YAML inventory."""

    def __init__(self, work: Path, images: Path, inventory: str = "devices: []\n", http_extra: str = "",
                 expect_images: int | None = None, default_image: str | None = None):
        self.work = work
        self.state = work / "state"
        (work / "tftp").mkdir(parents=True, exist_ok=True)
        self.inventory = work / "inventory.yaml"
        self.inventory.write_text(inventory)
        self.port = free_tcp_port()
        self.config = work / "bootserverd.yaml"
        default = f"  default: {default_image}\n" if default_image else ""
        self.config.write_text(f"""
server: {{address: 127.0.0.1, state_dir: {self.state}, log_level: debug}}
images:
  dir: {images}
  settle_seconds: 0
{default}tftp: {{enabled: false, root: {work / 'tftp'}}}
nbd: {{enabled: false}}
http:
  enabled: true
  listen: "127.0.0.1:{self.port}"
{http_extra}
dhcp: {{enabled: false}}
inventory: {{source: yaml, file: {self.inventory}, poll_interval: 0.2}}
""")
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = work / "daemon.log"
        self._log = open(self.log_path, "w")
        # tests run as root here; the daemon refuses that unless told (it has no user to drop to)
        env = dict(os.environ, BOOTSERVERD_ALLOW_ROOT="1")
        self.proc = subprocess.Popen([PYTHON, "-m", "bootserverd", "run", "-c", str(self.config)],
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        expected = expect_images if expect_images is not None else len(list(images.glob("*.img")))
        try:
            self.wait(lambda: len(self.json("/status")["images"]) >= expected, 30, "images published")
        except BaseException:
            self.stop()
            raise

    def url(self, path: str) -> str:
        return self.base + path

    def json(self, path: str):
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return json.load(response)

    def get(self, path: str, headers: dict | None = None, method: str = "GET"):
        """(status, headers, body) without raising on 4xx/5xx."""
        request = urllib.request.Request(self.url(path), headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def wait(self, predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if predicate():
                    return
            except (OSError, ValueError, KeyError) as exc:
                last = exc
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what} ({last}):\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        end(self.proc)
        self._log.close()


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)
