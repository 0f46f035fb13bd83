"""The file namespace that TFTP and HTTP serve: real files under the TFTP root, confined,
plus virtual files made by the boot resolver or read out of the images.

  pxelinux.cfg/01-<mac>, pxelinux.cfg/<HEXIP or prefix>, pxelinux.cfg/default
  ipxe/<mac>.ipxe, ipxe/default.ipxe
  [<dir>/]grub.cfg-01-<mac>, [<dir>/]grub.cfg-<HEXIP>, [<dir>/]grub.cfg
  images/<image>/vmlinuz, images/<image>/initrd.img (the image's default kernel)
  images/<image>/vmlinuz-<version>, images/<image>/initrd.img-<version> (each kernel in its /boot)
"""

from __future__ import annotations

import os
import re
import stat
from ipaddress import IPv4Address
from pathlib import Path

from bootserverd.model.objects import normalize_mac

from bootserverd.model.snapshot import Model
from bootserverd.boot.resolver import BootResolver

MAX_NAME = 512
HOT_FILE_MAX = 4 << 20        # boot loaders are far smaller; kernels are larger
HOT_CACHE_MAX = 64 << 20
_HEXIP = re.compile(r"^[0-9A-F]{1,8}$")


class BootFileError(Exception):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind          # "not-found" | "access-denied"


class MemoryFile:
    def __init__(self, name: str, data: bytes):
        self.name = name
        self.data = data
        self.size = len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def fileno(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class DiskFile:
    def __init__(self, name: str, fd: int, size: int):
        self.name = name
        self._fd = fd
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self._fd, length, offset)

    def fileno(self) -> int | None:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def split_path(path: str) -> list[str]:
    """Client path → safe components, or BootFileError("access-denied")."""
    if "\x00" in path:
        raise BootFileError("access-denied", "NUL byte in file name")
    if len(path) > MAX_NAME:
        raise BootFileError("access-denied", "file name too long")
    parts = [p for p in path.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BootFileError("access-denied", "'..' in file name")
    if not parts:
        raise BootFileError("not-found", "empty file name")
    return parts


def is_kernel_name(leaf: str) -> bool:
    """vmlinuz, initrd.img, vmlinuz-<version> or initrd.img-<version> (version still unchecked)."""
    return leaf in ("vmlinuz", "initrd.img") or leaf.startswith(("vmlinuz-", "initrd.img-"))


def _hex_ip(ip: str) -> str:
    """pxelinux's upper-case hex of an IPv4 address; "" for an IPv6 (HTTP) client."""
    try:
        return IPv4Address(ip).packed.hex().upper()
    except ValueError:
        return ""


class BootFiles:
    def __init__(self, root: Path, resolver: BootResolver, model: Model):
        self.root = root.resolve()
        self.resolver = resolver
        self.model = model
        self._hot: dict[str, tuple[tuple, bytes]] = {}
        self._hot_bytes = 0

    def reconfigure(self, root: Path) -> None:
        """SIGHUP: serve from a new tftp.root; transfers in flight keep their open files."""
        root = root.resolve()
        if root != self.root:
            self.root = root
            self._hot.clear()
            self._hot_bytes = 0

    def open(self, path: str, client_ip: str):
        parts = split_path(path)
        virtual = self._virtual(parts, client_ip)
        if virtual is not None:
            return virtual
        return self._real(parts)

    # -- virtual files --
    def _virtual(self, parts: list[str], client_ip: str):
        name = "/".join(parts)
        leaf = parts[-1]
        if parts[0] == "pxelinux.cfg" and len(parts) == 2:
            return self._config("pxelinux.cfg", name, self._mac_for(leaf, "01-", client_ip, _HEXIP), client_ip)
        if parts[0] == "ipxe" and len(parts) == 2 and leaf.endswith(".ipxe"):
            stem = leaf[:-len(".ipxe")]
            mac = self._mac_for(stem, "", client_ip, None) if stem != "default" else self._mac_by_ip(client_ip)
            return self._config("ipxe", name, mac, client_ip)
        if leaf == "grub.cfg" or leaf.startswith("grub.cfg-"):
            suffix = leaf[len("grub.cfg-"):] if leaf != "grub.cfg" else "default"
            return self._config("grub.cfg", name, self._mac_for(suffix, "01-", client_ip, _HEXIP), client_ip)
        if parts[0] == "images" and len(parts) == 3 and is_kernel_name(parts[2]):
            image = self.model.inventory.images.get(parts[1])
            if image is None:
                raise BootFileError("not-found", f"image {parts[1]} is not published")
            return self._open_disk(name, self._kernel_file(image, parts[1], parts[2]))
        return None

    @staticmethod
    def _kernel_file(image, image_name: str, leaf: str) -> Path:
        """The extracted file ``leaf`` names: looked up in the image's kernel map, never built
        from the request."""
        if leaf in ("vmlinuz", "initrd.img"):
            return image.kernel if leaf == "vmlinuz" else image.initrd
        kind, _, version = leaf.partition("-")
        pair = (getattr(image, "kernels", None) or {}).get(version)
        if pair is None:
            raise BootFileError("not-found", f"image {image_name} has no kernel {version[:100]!r}")
        return pair[0] if kind == "vmlinuz" else pair[1]

    def _mac_for(self, leaf: str, mac_prefix: str, client_ip: str, hexip: re.Pattern | None) -> str | None:
        """The MAC a config request is for: named in it, or found by the client's address."""
        if leaf.startswith(mac_prefix):
            try:
                return normalize_mac(leaf[len(mac_prefix):])
            except ValueError:
                pass
        if leaf == "default":
            return self._mac_by_ip(client_ip)
        if hexip is not None and hexip.match(leaf):
            mine = client_ip and _hex_ip(client_ip).startswith(leaf)
            return self._mac_by_ip(client_ip) if mine else None
        raise BootFileError("not-found", f"no such config {leaf}")

    def _mac_by_ip(self, client_ip: str) -> str | None:
        for device in self.model.inventory.devices:
            if device.ip == client_ip:
                return device.mac
        return None

    def _config(self, fmt: str, name: str, mac: str | None, client_ip: str) -> MemoryFile:
        return MemoryFile(name, self.resolver.render(fmt, mac, client_ip))

    # -- real files --
    def _real(self, parts: list[str]):
        candidate = self.root.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            raise BootFileError("not-found", f"{'/'.join(parts)} not found") from None
        if resolved != self.root and self.root not in resolved.parents:
            raise BootFileError("access-denied", f"{'/'.join(parts)} leads outside the TFTP root")
        return self._open_disk("/".join(parts), resolved)

    def _open_disk(self, name: str, path: Path):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BootFileError("not-found", f"{name} not found") from None
        except OSError as exc:
            raise BootFileError("access-denied", f"{name}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise BootFileError("not-found", f"{name} is not a file")
        if st.st_size > HOT_FILE_MAX:
            return DiskFile(name, fd, st.st_size)
        try:
            return MemoryFile(name, self._hot_bytes_for(str(path), fd, st))
        finally:
            os.close(fd)

    def _hot_bytes_for(self, key: str, fd: int, st: os.stat_result) -> bytes:
        """Small files (boot loaders) from memory, re-read when the file changes."""
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        cached = self._hot.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        data = os.pread(fd, st.st_size, 0)
        if cached is not None:
            self._hot_bytes -= len(cached[1])
            del self._hot[key]
        if self._hot_bytes + len(data) <= HOT_CACHE_MAX:
            self._hot[key] = (stamp, data)
            self._hot_bytes += len(data)
        return data
