"""The tiny bootable image of the end-to-end tests, built from Debian packages and cached.

The image is a squashfs holding /boot/vmlinuz-<v> and /boot/initrd.img-<v> (bootserverd
serves both from inside it) and a root with busybox-static whose /sbin/init prints

    BOOTSERVERD-E2E-MARKER hostname=<from DHCP option 12> version=<from /etc/image-version>

and powers off. The initramfs loads the NIC, nbd and squashfs modules, waits for carrier,
runs udhcpc, attaches /dev/nbd0 with Debian's nbd-client (nbdroot= exactly as Debian's
initramfs reads it), mounts it read-only and switch_roots. Any failure prints
``BOOTSERVERD-E2E-FAIL: <why>`` and powers off, so a test fails in seconds, not at its timeout.

    python tests/e2e/build_image.py [DIR]    # prints the image path (copies it into DIR)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e import debs  # noqa: E402

MARKER = "BOOTSERVERD-E2E-MARKER"
FAIL = "BOOTSERVERD-E2E-FAIL"
SERIES = "e2etiny"
VERSION = "2026-01-02-030405"           # the image name's version; /etc/image-version says it too
NAME = f"{SERIES}-{VERSION}-amd64"
# NIC drivers for qemu's e1000 and virtio-net, then the block and filesystem layers
MODULES = ("e1000", "virtio_pci", "virtio_net", "nbd", "squashfs")
LIBDIR = "lib/x86_64-linux-gnu"

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /newroot /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "BOOTSERVERD-E2E-FAIL: $*"; sleep 1; poweroff -f; }
echo "e2e-initrd: start"
for m in $(cat /modules.order); do insmod "/lib/modules/$m" || fail "insmod $m"; done
IF=""
n=0
while [ -z "$IF" ]; do
  for d in /sys/class/net/*; do [ "${d##*/}" = lo ] || IF="${d##*/}"; done
  n=$((n+1)); [ -n "$IF" ] || [ $n -lt 50 ] || fail "no network interface"; [ -n "$IF" ] || sleep 0.1
done
ip link set "$IF" up
n=0
# e1000 takes about 2 s to report carrier after link up
until [ "$(cat /sys/class/net/$IF/carrier 2>/dev/null)" = 1 ]; do
  n=$((n+1)); [ $n -lt 150 ] || fail "no carrier on $IF"; sleep 0.1
done
udhcpc -i "$IF" -n -q -t 5 -T 2 -s /udhcpc.sh -x hostname:e2e-initrd >/dev/null 2>&1 || fail "no DHCP lease on $IF"
. /run/dhcp.env
[ -n "$hostname" ] && hostname "$hostname"
for x in $(cat /proc/cmdline); do case "$x" in nbdroot=*) nbdroot="${x#nbdroot=}";; esac; done
[ -n "$nbdroot" ] || fail "no nbdroot= on the kernel command line"
# ipv4:port/name, as Debian's initramfs local-top/nbd reads it
srv="${nbdroot%%[:/]*}"; rest="${nbdroot#$srv}"; rest="${rest#:}"; port="${rest%%/*}"; name="${rest#$port/}"
nbd-client "$srv" -N "$name" "$port" /dev/nbd0 -persist || fail "nbd-client $nbdroot"
mount -t squashfs -o ro /dev/nbd0 /newroot || fail "mount squashfs from /dev/nbd0"
echo "e2e-initrd: ip $ip hostname $hostname root nbd://$srv:$port/$name"
exec switch_root /newroot /sbin/init
fail "switch_root"
"""

UDHCPC = r"""#!/bin/busybox sh
case "$1" in
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
    echo "ip='$ip' hostname='$hostname'" > /run/dhcp.env ;;
esac
exit 0
"""

ROOT_INIT = r"""#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
echo "BOOTSERVERD-E2E-MARKER hostname=$(/bin/busybox hostname) version=$(/bin/busybox cat /etc/image-version)"
/bin/busybox poweroff -f
"""


@dataclass(frozen=True)
class TinyImage:
    path: Path              # the cached squashfs; copy it into an image directory
    name: str               # image name (file name without .img)
    version: str
    kernel_version: str


def _sources() -> dict[str, str]:
    return {"kernel": debs.kernel_package(), "busybox": "busybox-static", "nbd": "nbd-client"}


def tiny_image() -> TinyImage:
    """Build once per package set and builder version; later calls return the cached file."""
    def resolve():
        sources = _sources()
        closure = debs.library_closure("nbd-client")
        versions = sorted((p, debs.candidate(p)) for p in set(sources.values()) | set(closure))
        return {"sources": sources, "closure": closure, "versions": versions}
    resolved = debs.memo("tiny-packages", resolve)
    sources, closure = resolved["sources"], resolved["closure"]
    key_text = json.dumps(resolved["versions"])     # not repr: the memo gives lists, a fresh answer tuples
    key = hashlib.sha256((key_text + Path(__file__).read_text()).encode()).hexdigest()[:16]
    target = debs.CACHE / f"tiny-{key}" / f"{NAME}.img"
    kernel_version = sources["kernel"][len("linux-image-"):]
    image = TinyImage(target, NAME, VERSION, kernel_version)
    if target.is_file():
        return image
    with debs.locked("tiny"):
        if not target.is_file():
            _build(target, sources["kernel"], kernel_version, closure)
            for stale in debs.CACHE.glob("tiny-*"):        # images of earlier inputs
                if stale.is_dir() and stale != target.parent:
                    shutil.rmtree(stale, ignore_errors=True)
    return image


def _build(target: Path, kernel_pkg: str, kver: str, closure: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="bootserverd-e2e-") as tmp:
        tmp = Path(tmp)
        stage, initrd, root = tmp / "stage", tmp / "initrd", tmp / "root"
        kernel_root = debs.unpacked(debs.download(kernel_pkg))
        for package in ["busybox-static", *closure]:
            debs.unpack(debs.download(package), stage)
        _initrd_tree(initrd, kernel_root, stage, kver)
        for sub in ("bin", "sbin", "etc", "proc", "sys", "dev", "boot", "tmp"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(stage / "bin/busybox", root / "bin/busybox")
        _write(root / "sbin/init", ROOT_INIT, 0o755)
        _write(root / "etc/image-version", VERSION + "\n", 0o644)
        shutil.copy2(kernel_root / f"boot/vmlinuz-{kver}", root / f"boot/vmlinuz-{kver}")
        (root / f"boot/initrd.img-{kver}").write_bytes(gzip.compress(newc(initrd), 6, mtime=0))
        os.symlink(f"vmlinuz-{kver}", root / "boot/vmlinuz")
        os.symlink(f"initrd.img-{kver}", root / "boot/initrd.img")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        subprocess.run(["mksquashfs", str(root), str(partial), "-comp", "zstd", "-noappend", "-quiet",
                        "-no-progress", "-all-root", "-mkfs-time", "0", "-all-time", "0"],
                       check=True, stdout=subprocess.DEVNULL, timeout=300)
        os.replace(partial, target)


def _write(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _initrd_tree(initrd: Path, kernel_root: Path, stage: Path, kver: str) -> None:
    for sub in ("bin", "sbin", "lib/modules", LIBDIR, "lib64", "proc", "sys", "dev", "run", "newroot"):
        (initrd / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy2(stage / "bin/busybox", initrd / "bin/busybox")
    shutil.copy2(stage / "sbin/nbd-client", initrd / "sbin/nbd-client")
    for lib in needed_libraries(stage / "sbin/nbd-client", stage):
        # under the name the loader asks for (the soname link), with the real file's mode
        shutil.copy2(lib.resolve(), initrd / LIBDIR / lib.name)
    os.symlink(f"/{LIBDIR}/ld-linux-x86-64.so.2", initrd / "lib64/ld-linux-x86-64.so.2")
    order = []
    for module in module_load_order(kernel_root / "lib/modules" / kver, MODULES):
        shutil.copy2(module, initrd / "lib/modules" / module.name)
        order.append(module.name)
    _write(initrd / "modules.order", "\n".join(order) + "\n", 0o644)
    _write(initrd / "init", INIT, 0o755)
    _write(initrd / "udhcpc.sh", UDHCPC, 0o755)


def needed_libraries(binary: Path, stage: Path) -> list[Path]:
    """Shared objects ``binary`` loads, resolved inside the unpacked packages (ldd with the
    staged library path first; anything resolved outside ``stage`` is an error)."""
    path = ":".join(str(stage / d) for d in (LIBDIR, f"usr/{LIBDIR}"))
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, timeout=30,
                         env={"LD_LIBRARY_PATH": path, "PATH": "/usr/bin:/bin"}).stdout
    libs = []
    for line in out.splitlines():
        match = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if "not found" in line:
            raise RuntimeError(f"{binary.name}: {line.strip()}")
        if not match:
            continue
        found = Path(match[1])
        if found.name.startswith("ld-linux"):
            found = stage / LIBDIR / found.name
        if stage not in found.parents:
            raise RuntimeError(f"{binary.name}: {found} is not from the unpacked packages")
        libs.append(found)
    return libs


def module_load_order(moddir: Path, wanted: tuple[str, ...]) -> list[Path]:
    """Modules with their dependencies first (from each .ko's own modinfo 'depends=')."""
    index = {p.name.split(".ko")[0].replace("-", "_"): p for p in moddir.rglob("*.ko*")}
    order: list[Path] = []

    def visit(name: str, depth: int = 0) -> None:
        module = index.get(name.replace("-", "_"))
        if module is None:
            raise RuntimeError(f"module {name} not in {moddir}")
        if module in order or depth > 20:
            return
        data = module.read_bytes()
        match = re.search(rb"(?:^|\0)depends=([^\0]*)\0", data)
        for dep in (match[1].decode().split(",") if match and match[1] else []):
            visit(dep, depth + 1)
        order.append(module)

    for name in wanted:
        visit(name)
    return order


def newc(tree: Path) -> bytes:
    """A cpio 'newc' archive of ``tree`` (what the kernel unpacks as an initramfs)."""
    out = io.BytesIO()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))
        ino += 1

    for path in sorted(tree.rglob("*")):
        name = str(path.relative_to(tree))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            entry(name, stat.S_IFLNK | 0o777, os.readlink(path).encode())
        elif stat.S_ISDIR(st.st_mode):
            entry(name, stat.S_IFDIR | 0o755, b"")
        else:
            entry(name, stat.S_IFREG | stat.S_IMODE(st.st_mode), path.read_bytes())
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


def main(argv: list[str]) -> int:
    image = tiny_image()
    if argv:
        dest = Path(argv[0]) / image.path.name
        shutil.copy2(image.path, dest)
        print(dest)
    else:
        print(image.path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
