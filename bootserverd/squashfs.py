"""Reading files out of a squashfs image without mounting it and without root.

Uses squashfs-tools' ``unsquashfs -lls`` / ``-cat`` in a subprocess. PySquashfsImage was
measured too (tests/bench/squashfs_bench.py, docs/benchmarks.md): it extracts 1.2-2.5x faster
(65 vs 81 ms for a 32 MiB initrd), but extraction happens once per image version, off the
reactor, and is dwarfed by hashing the image; unsquashfs reads every compressor squashfs
has, is a Debian package, and a corrupt image cannot hang or crash the daemon's process.
Blocking calls: run them off the reactor thread.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"hsqs"
_LISTING = re.compile(r"^(?P<mode>[-dlcbps][-rwxsStT]{9})\s+\S+\s+(?P<size>\d+)\s+\S+\s+\S+\s(?P<path>.*)$")
_VERSION = re.compile(r"(\d+)")


class SquashfsError(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    path: str        # absolute inside the image, e.g. /boot/vmlinuz-6.1.0-18-amd64
    kind: str        # "file", "dir", "symlink" or "other"
    size: int
    target: str | None = None


def is_squashfs(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == MAGIC
    except OSError:
        return False


def list_entries(image: Path, directory: str) -> list[Entry]:
    """The entries below ``directory`` (recursive), symlink targets included."""
    result = _run(["unsquashfs", "-lls", "-d", "", str(image), directory])
    entries = []
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        match = _LISTING.match(line)
        if not match or not match["path"]:
            continue
        path, target = match["path"], None
        kind = {"-": "file", "d": "dir", "l": "symlink"}.get(match["mode"][0], "other")
        if kind == "symlink":
            path, _, target = path.partition(" -> ")
        entries.append(Entry(path, kind, int(match["size"]), target))
    return entries


def cat(image: Path, path: str, out) -> None:
    """Write the regular file ``path`` of the image to the binary file object ``out``."""
    proc = subprocess.run(["unsquashfs", "-cat", str(image), path.lstrip("/")],
                          stdout=out, stderr=subprocess.PIPE, timeout=600, check=False)
    if proc.returncode != 0:
        raise SquashfsError(f"unsquashfs -cat {path}: {proc.stderr.decode(errors='replace').strip()}")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=120, check=False)
    except FileNotFoundError:
        raise SquashfsError("unsquashfs not found: install squashfs-tools") from None
    except subprocess.TimeoutExpired:
        raise SquashfsError(f"{argv[0]} timed out") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip().splitlines()
        raise SquashfsError(message[-1] if message else f"unsquashfs exited {proc.returncode}")
    return proc


def resolve(entries: dict[str, Entry], path: str, depth: int = 0) -> Entry | None:
    """Follow symlinks within the listing (at most 8 hops); None if it leads nowhere."""
    entry = entries.get(path)
    if entry is None or entry.kind != "symlink":
        return entry
    if depth >= 8 or not entry.target:
        return None
    target = entry.target if entry.target.startswith("/") else \
        posixpath.join(posixpath.dirname(path), entry.target)
    return resolve(entries, posixpath.normpath(target), depth + 1)


def _version_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in _VERSION.split(name)]


def find_boot_files(image: Path) -> tuple[str, str]:
    """(kernel path, initrd path) inside the image: /boot/vmlinuz and /boot/initrd.img if they
    are links, else the newest ``vmlinuz-<version>`` with its matching ``initrd.img-<version>``."""
    listing = {e.path: e for e in list_entries(image, "boot")}
    try:
        listing.update({e.path: e for e in list_entries(image, "/vmlinuz") + list_entries(image, "/initrd.img")})
    except SquashfsError:
        pass  # no top-level links: fine
    for kernel_link, initrd_link in (("/boot/vmlinuz", "/boot/initrd.img"), ("/vmlinuz", "/initrd.img")):
        kernel, initrd = resolve(listing, kernel_link), resolve(listing, initrd_link)
        if kernel and initrd and kernel.kind == initrd.kind == "file":
            return kernel.path, initrd.path
    kernels = sorted((e for e in listing.values() if e.kind == "file"
                      and posixpath.basename(e.path).startswith("vmlinuz")),
                     key=lambda e: _version_key(e.path), reverse=True)
    for kernel in kernels:
        suffix = posixpath.basename(kernel.path)[len("vmlinuz"):]
        initrd = listing.get(f"/boot/initrd.img{suffix}")
        if initrd is not None and initrd.kind == "file":
            return kernel.path, initrd.path
    raise SquashfsError("no /boot/vmlinuz* with a matching /boot/initrd.img* inside the image")
