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
from types import MappingProxyType
from typing import Mapping

from bootserverd.model.validate import KERNEL_VERSION   # one rule for inventories and images

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


def _run(argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
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


def version_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in _VERSION.split(name)]


# A version names cache files and URLs (vmlinuz-<v>): keep it to characters that are safe in both.


@dataclass(frozen=True)
class BootKernels:
    """What an image can boot: its default pair and every ``vmlinuz-<v>`` with its
    ``initrd.img-<v>`` in /boot (paths inside the image, symlinks resolved)."""
    default: tuple[str, str]
    default_version: str | None                 # the version of ``default`` when it is in ``versions``
    versions: Mapping[str, tuple[str, str]]
    sizes: Mapping[str, int]                    # path inside the image → size, to check extraction

    def sources(self) -> list[str]:
        """Every file to extract, each once."""
        return sorted({path for pair in (self.default, *self.versions.values()) for path in pair})


def find_kernels(image: Path) -> BootKernels:
    """The default pair: /boot/vmlinuz and /boot/initrd.img if they are links (or /vmlinuz,
    /initrd.img), else the newest ``vmlinuz-<version>`` with its ``initrd.img-<version>``."""
    listing = {e.path: e for e in list_entries(image, "boot")}
    try:
        listing.update({e.path: e for e in list_entries(image, "/vmlinuz") + list_entries(image, "/initrd.img")})
    except SquashfsError:
        pass  # no top-level links: fine
    versions: dict[str, tuple[str, str]] = {}
    for path in listing:
        name = posixpath.basename(path)
        if posixpath.dirname(path) != "/boot" or not name.startswith("vmlinuz-"):
            continue
        version = name[len("vmlinuz-"):]
        kernel, initrd = resolve(listing, path), resolve(listing, f"/boot/initrd.img-{version}")
        if KERNEL_VERSION.match(version) and kernel and initrd and kernel.kind == initrd.kind == "file":
            versions[version] = (kernel.path, initrd.path)
    default = None
    for kernel_link, initrd_link in (("/boot/vmlinuz", "/boot/initrd.img"), ("/vmlinuz", "/initrd.img")):
        kernel, initrd = resolve(listing, kernel_link), resolve(listing, initrd_link)
        if kernel and initrd and kernel.kind == initrd.kind == "file":
            default = (kernel.path, initrd.path)
            break
    if default is None and versions:
        default = versions[max(versions, key=version_key)]
    if default is None:
        raise SquashfsError("no /boot/vmlinuz* with a matching /boot/initrd.img* inside the image")
    default_version = next((v for v in sorted(versions, key=version_key) if versions[v] == default), None)
    sizes = {e.path: e.size for e in listing.values() if e.kind == "file"}
    return BootKernels(default, default_version, MappingProxyType(versions), MappingProxyType(sizes))


def describe_versions(versions, default: str | None) -> str:
    """'6.1.0-18-amd64 (default), 6.1.0-21-amd64' for logs; 'no versioned kernel' when empty."""
    names = [f"{v} (default)" if v == default else v for v in sorted(versions, key=version_key)]
    return ", ".join(names) or "no versioned kernel"


def find_boot_files(image: Path) -> tuple[str, str]:
    """(kernel path, initrd path) of the image's default kernel."""
    return find_kernels(image).default


def extract(image: Path, paths: list[str], dest: Path, sizes: Mapping[str, int] | None = None) -> None:
    """Extract the regular files ``paths`` into ``dest`` (which must not exist yet; the tree
    is kept: /boot/x → dest/boot/x) in one unsquashfs run. unsquashfs exits 0 when a name is
    missing, so each file is checked afterwards (and its size, when ``sizes`` has it)."""
    argv = ["unsquashfs", "-d", str(dest), "-no-xattrs", "-no-wildcards", "-n", "-q", str(image)]
    _run(argv + [p.lstrip("/") for p in paths], timeout=600)
    for path in paths:
        out = dest / path.lstrip("/")
        try:
            size = out.lstat().st_size if out.is_file() and not out.is_symlink() else None
        except OSError:
            size = None
        if size is None or (sizes is not None and path in sizes and sizes[path] != size):
            raise SquashfsError(f"unsquashfs did not extract {path} whole")
