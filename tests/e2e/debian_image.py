"""The real Debian image of the slow end-to-end boot, built from the cached debootstrap minbase
root (tests/support/debian.py) in a chroot, and cached.

Inside the chroot, apt installs linux-image-amd64, initramfs-tools, nbd-client, systemd-sysv,
busybox and zstd (initramfs-tools' recommends: its scripts want busybox's tools; zstd is its
default compressor) and our ``bootserverd-client`` package, built from this tree
(tests/e2e/debs.py). Nothing is installed on the host. The image boots with Debian's own
initramfs: klibc ``ipconfig`` (``ip=dhcp``), nbd-client's ``local-top/nbd`` (``nbdroot=``),
a squashfs root mounted read-only; bootserverd-client's pieces add the nbd/squashfs/overlay
modules (its hook), wait for the link before DHCP (``init-premount/bootserverd-link``) and put
a tmpfs upper layer on the root (``local-bottom/bootserverd-overlay``) so systemd has a
writable root; its ``bootserverd-nbd-reconnect.service`` (enabled, wanted by sysinit.target)
keeps the root's NBD connection: dead-connection timeout, a new connection when the server is
back (tests/e2e/test_debian_reconnect.py). A unit wanted by multi-user.target prints

    BOOTSERVERD-E2E-MARKER hostname=<DHCP option 12> version=<from /etc/image-version> multi-user=active

on the serial console. With ``bootserverd.e2e_reader=1`` on the kernel line (and only then) a
second unit reads files of the squashfs root without end, caches dropped each round, and prints
``E2E-READER ok <round> <bytes> longest_read_ms=<ms>`` about twice a second and
``E2E-READER error <what>`` on a failed read (tests/e2e/test_debian_restart.py restarts the
server under it). The squashfs uses docs/images.md's settings. The cache entry is keyed
by this file's recipe, the minbase tarball, the package versions apt would install and the
bootserverd-client package's inputs (debs.client_key: bootserverd_client/, client/ and the
packaging, so a change in the reconnect helper's sources is a new image); it is built in a
temporary directory next to it and renamed into place.

    python tests/e2e/debian_image.py         # prints the image path
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.e2e import debs  # noqa: E402
from tests.support.debian import minbase_tarball  # noqa: E402

MARKER = "BOOTSERVERD-E2E-MARKER"
SERIES = "e2edebian"
VERSION = "2026-01-03-040506"
NAME = f"{SERIES}-{VERSION}-amd64"
PACKAGES = ("linux-image-amd64", "initramfs-tools", "nbd-client", "systemd-sysv", "busybox", "zstd")
# the host's suites, so that the versions in the cache key are the ones the chroot installs
SOURCES = """\
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
"""
# what docs/images.md says an image is built with
MKSQUASHFS = ("-comp", "zstd", "-no-fragments", "-mkfs-time", "0", "-all-time", "0", "-noappend")

# Lines of the boot that mean it will not reach the marker: fail in seconds, not at the timeout.
FAILURES = ("Kernel panic", "ALERT!", "Dropping to a shell", "emergency mode", "Insufficient information to set up nbd",
            "BOOTSERVERD-E2E-FAIL")

# initramfs-tools' conf.d: network drivers and the base set, not every block driver (MODULES=most
# makes a 3x larger initrd that TCG needs seconds to unpack); the NBD root needs no disk driver.
# The image's choice, not bootserverd-client's: a laptop that boots the image from its disk
# needs its disk drivers.
INITRAMFS_CONF = """\
MODULES=netboot
"""
# the units of bootserverd-client that must be enabled in the image (checked before it is squashed)
ENABLED = ("sysinit.target.wants/bootserverd-nbd-reconnect.service",)
# what bootserverd-client must have put into the initrd (checked before the image is squashed)
IN_INITRD = ("scripts/init-premount/bootserverd-link", "scripts/local-bottom/bootserverd-overlay",
             "/kernel/fs/overlayfs/overlay.ko", "/kernel/fs/squashfs/squashfs.ko", "/kernel/drivers/block/nbd.ko")

MARKER_SCRIPT = f"""\
#!/bin/sh
# the hostname DHCP gave the initramfs (klibc ipconfig writes /run/net-<if>.conf)
for f in /run/net-*.conf; do [ -f "$f" ] && . "$f"; done
echo "{MARKER} hostname=${{HOSTNAME:-none}} version=$(cat /etc/image-version)" \\
     "multi-user=$(systemctl is-active multi-user.target) root=$(findmnt -no FSTYPE /)" > /dev/console
"""

# Ordered after multi-user.target (DefaultDependencies=no, so the target is not ordered after
# it in turn): the marker proves the target was reached.
MARKER_UNIT = """\
[Unit]
Description=bootserverd end-to-end marker
DefaultDependencies=no
After=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/bootserverd-e2e-marker

[Install]
WantedBy=multi-user.target
"""


READER = "E2E-READER"
# Rounds of ~0.5 s: drop every cache, then cat the next files of /usr (a rotating list) until
# the round's time is up. A round's line says the reading goes on; a pause in the lines (and
# longest_read_ms) is a stall of the root device. The kernel's own lines about the root device
# (nbd, squashfs, block I/O errors) are copied with an E2E-KERNEL prefix: the console shows only
# the more severe ones (nbd's "Possible stuck request" is info). Bounded: 20000 rounds or 2 hours.
READER_SCRIPT = f"""\
#!/bin/bash
exec > /dev/console 2>&1
dmesg --follow-new 2>/dev/null | grep --line-buffered -iE 'nbd|squashfs|I/O error|blk_update' \\
    | sed -u 's/^/E2E-KERNEL /' &
mapfile -t files < <(find /usr -xdev -type f -size +3k -printf '%s %p\\n' 2>/dev/null)
count=${{#files[@]}}
[ "$count" -gt 0 ] || {{ echo "{READER} error no files under /usr"; exit 1; }}
round=0 next=0 bytes=0
while [ "$round" -lt 20000 ] && [ "$SECONDS" -lt 7200 ]; do
    echo 3 > /proc/sys/vm/drop_caches || echo "{READER} error drop_caches"
    began=${{EPOCHREALTIME/./}} longest=0 files_read=0
    while [ "$files_read" -lt 1000 ]; do
        files_read=$(( files_read + 1 ))
        entry=${{files[next]}} next=$(( (next + 1) % count ))
        t0=${{EPOCHREALTIME/./}}
        cat -- "${{entry#* }}" > /dev/null
        rc=$? t1=${{EPOCHREALTIME/./}}
        if [ "$rc" -ne 0 ]; then
            echo "{READER} error cat ${{entry#* }} exit $rc"
        else
            bytes=$(( bytes + ${{entry%% *}} ))
        fi
        [ $(( t1 - t0 )) -gt "$longest" ] && longest=$(( t1 - t0 ))
        [ $(( t1 - began )) -ge 500000 ] && break
    done
    round=$(( round + 1 ))
    echo "{READER} ok $round $bytes longest_read_ms=$(( longest / 1000 ))"
done
echo "{READER} done $round $bytes"
"""
# Inert unless the kernel line asks for it: every other boot of the image is unchanged.
READER_UNIT = """\
[Unit]
Description=bootserverd end-to-end reader of the NBD root (bootserverd.e2e_reader=1 only)
ConditionKernelCommandLine=bootserverd.e2e_reader=1
DefaultDependencies=no
After=multi-user.target bootserverd-e2e-marker.service

[Service]
ExecStart=/usr/local/sbin/bootserverd-e2e-reader

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class DebianImage:
    path: Path
    name: str
    version: str


def _key() -> str:
    def resolve():
        names = sorted(set(PACKAGES) | {debs.kernel_package()})
        return [(name, debs.candidate(name)) for name in names]
    versions = debs.memo("debian-packages", resolve)
    base = minbase_tarball()
    st = base.stat()
    # the recipe, not the whole file: a new failure pattern must not cost a rebuild
    recipe = [PACKAGES, SOURCES, MKSQUASHFS, INITRAMFS_CONF, IN_INITRD, ENABLED, MARKER_SCRIPT, MARKER_UNIT, READER_SCRIPT,
              READER_UNIT, VERSION,
              *(inspect.getsource(f) for f in (_build, _prepare, _finish, _check_initrd, _check_enabled))]
    # JSON, not repr: the memo hands back lists where a fresh answer has tuples
    text = json.dumps([versions, st.st_size, st.st_mtime_ns, debs.client_key(), recipe])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def debian_image() -> DebianImage:
    """Build once per input set (cold: debootstrap root + apt in a chroot + mksquashfs)."""
    target = debs.CACHE / f"debian-{_key()}" / f"{NAME}.img"
    image = DebianImage(target, NAME, VERSION)
    if target.is_file():
        return image
    with debs.locked("debian"):
        if not target.is_file():
            _build(target)
            for stale in debs.CACHE.glob("debian-*"):      # earlier inputs: ~200 MB each
                if stale.is_dir() and stale != target.parent:
                    _remove(stale)
    return image


def _build(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))   # same filesystem: rename
    root = work / "root"
    root.mkdir()
    try:
        client = debs.client_deb()
        subprocess.run(["tar", "-xf", str(minbase_tarball()), "-C", str(root)], check=True, timeout=600)
        _prepare(root)
        shutil.copy(client, root / "tmp" / client.name)
        with _mounted(root):
            # one apt run: the kernel's initrd is (re)made once every hook and script is in place
            # (bootserverd-client's update-initramfs trigger runs at the end if it came last)
            _in_root(root, "apt-get -o DPkg::Lock::Timeout=600 update -qq && "
                           "apt-get install -y -qq --no-install-recommends " + " ".join(PACKAGES) +
                           f" /tmp/{client.name} && rm /tmp/{client.name}")
            _in_root(root, "systemctl enable bootserverd-e2e-marker.service bootserverd-e2e-reader.service"
                           " && systemctl mask systemd-firstboot.service"
                           " && apt-get clean")
            _check_initrd(root)
            _check_enabled(root)
        _finish(root)
        partial = work / "image.partial"
        subprocess.run(["mksquashfs", str(root), str(partial), *MKSQUASHFS, "-quiet", "-no-progress"],
                       check=True, stdout=subprocess.DEVNULL, timeout=1200)
        os.replace(partial, target)
    finally:
        _remove(work)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def _prepare(root: Path) -> None:
    _write(root / "etc/apt/sources.list", SOURCES)
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    _write(root / "usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)     # start no services
    # the kernel's links in /boot (/boot/vmlinuz, /boot/initrd.img), where PXE tooling looks
    _write(root / "etc/kernel-img.conf", "do_symlinks = yes\nlink_in_boot = yes\n")
    # before the kernel's postinst runs update-initramfs
    _write(root / "etc/initramfs-tools/conf.d/bootserverd", INITRAMFS_CONF)
    _write(root / "usr/local/sbin/bootserverd-e2e-marker", MARKER_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/bootserverd-e2e-marker.service", MARKER_UNIT)
    _write(root / "usr/local/sbin/bootserverd-e2e-reader", READER_SCRIPT, 0o755)
    _write(root / "etc/systemd/system/bootserverd-e2e-reader.service", READER_UNIT)


def _check_initrd(root: Path) -> None:
    """bootserverd-client's pieces are in the kernel's initrd: a missing one fails here, not as
    a boot that hangs in qemu."""
    # by its real name: lsinitramfs given the /boot/initrd.img link fails ("premature end of archive")
    initrd = os.path.join("/boot", os.readlink(root / "boot/initrd.img"))
    listing = subprocess.run(["chroot", str(root), "lsinitramfs", initrd], capture_output=True,
                             text=True, timeout=300, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    missing = [want for want in IN_INITRD if want not in listing.stdout]
    if listing.returncode != 0 or missing:
        raise RuntimeError(f"the image's initrd lacks {missing} (lsinitramfs exit {listing.returncode}): "
                           f"{listing.stderr[-2000:]}")


def _check_enabled(root: Path) -> None:
    """bootserverd-client's units are enabled (the package's postinst in the chroot did it)."""
    missing = [link for link in ENABLED if not (root / "etc/systemd/system" / link).is_symlink()]
    if missing:
        raise RuntimeError(f"not enabled in the image: {missing}")


def _finish(root: Path) -> None:
    _write(root / "etc/image-version", VERSION + "\n")
    _write(root / "etc/machine-id", "")          # every boot makes its own (a shared image)
    (root / "etc/hostname").unlink(missing_ok=True)     # the hostname comes from the kernel line / DHCP
    (root / "usr/sbin/policy-rc.d").unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    for lists in (root / "var/lib/apt/lists").glob("*_*"):
        lists.unlink()


def _in_root(root: Path, script: str, timeout: int = 1800) -> None:
    done = subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                                "DEBIAN_FRONTEND": "noninteractive"})
    if done.returncode != 0:
        raise RuntimeError(f"in the image chroot: {script}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


@contextlib.contextmanager
def _mounted(root: Path):
    """/proc, /sys and /dev inside the chroot only, unmounted whatever happens."""
    mounted = []
    try:
        for kind, sub in (("proc", "proc"), ("sysfs", "sys"), ("devtmpfs", "dev")):
            subprocess.run(["mount", "-t", kind, kind, str(root / sub)], check=True, timeout=30)
            mounted.append(root / sub)
        yield
    finally:
        for path in reversed(mounted):
            if subprocess.run(["umount", str(path)], timeout=60).returncode != 0:
                subprocess.run(["umount", "-l", str(path)], timeout=60)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]


def _remove(work: Path) -> None:
    # never rm -rf through a mount (a devtmpfs left mounted would take the host's /dev with it)
    left = _mounts_below(work)
    if left:
        raise RuntimeError(f"still mounted, not removing {work}: {left}")
    shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    print(debian_image().path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
