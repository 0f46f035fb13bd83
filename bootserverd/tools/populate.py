"""``bootserverd populate-tftp``: put Debian's boot loaders into the TFTP root.

Each loader is hard-linked from its installed path (copied when the TFTP root is on another
filesystem). Not a symlink: the TFTP/HTTP file namespace refuses links that lead outside
its root. Re-run after a package upgrade; a changed file is replaced, an equal one kept.
docs/boot.md lists which package gives which file.
"""

from __future__ import annotations

import filecmp
import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Loader:
    name: str            # path below the TFTP root
    source: str          # installed path
    package: str         # the Debian package that installs it
    role: str


LOADERS = (
    Loader("undionly.kpxe", "/usr/lib/ipxe/undionly.kpxe", "ipxe", "BIOS (arch 0): iPXE over the ROM's UNDI"),
    Loader("ipxe.efi", "/usr/lib/ipxe/ipxe.efi", "ipxe", "UEFI x64 (arch 7/9): iPXE with its own drivers"),
    Loader("snponly.efi", "/usr/lib/ipxe/snponly.efi", "ipxe", "UEFI x64: iPXE over the firmware's SNP"),
    Loader("pxelinux.0", "/usr/lib/PXELINUX/pxelinux.0", "pxelinux", "BIOS: PXELINUX (TFTP only)"),
    Loader("lpxelinux.0", "/usr/lib/PXELINUX/lpxelinux.0", "pxelinux", "BIOS: PXELINUX with HTTP"),
    Loader("ldlinux.c32", "/usr/lib/syslinux/modules/bios/ldlinux.c32", "syslinux-common",
           "PXELINUX core module (needed)"),
    Loader("menu.c32", "/usr/lib/syslinux/modules/bios/menu.c32", "syslinux-common", "PXELINUX menu"),
    Loader("libutil.c32", "/usr/lib/syslinux/modules/bios/libutil.c32", "syslinux-common", "menu.c32 needs it"),
    Loader("libcom32.c32", "/usr/lib/syslinux/modules/bios/libcom32.c32", "syslinux-common", "menu.c32 needs it"),
    Loader("syslinux.efi", "/usr/lib/SYSLINUX.EFI/efi64/syslinux.efi", "syslinux-efi", "UEFI x64: SYSLINUX"),
    Loader("ldlinux.e64", "/usr/lib/syslinux/modules/efi64/ldlinux.e64", "syslinux-common",
           "syslinux.efi core module (needed)"),
    Loader("grubnetx64.efi", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed",
           "UEFI x64: GRUB netboot image (prefix /grub: reads /grub/grub.cfg)"),
    Loader("shimx64.efi", "/usr/lib/shim/shimx64.efi.signed", "shim-signed",
           "UEFI x64 Secure Boot first stage (signed by Microsoft's UEFI CA): loads grubx64.efi beside it"),
    Loader("grubx64.efi", "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", "grub-efi-amd64-signed",
           "the GRUB netboot image under the name shim loads (signed by Debian)"),
    Loader("mmx64.efi", "/usr/lib/shim/mmx64.efi.signed", "shim-signed",
           "MokManager: what shim shows when a loader's signature is refused"),
)


def populate(root: Path, loaders=LOADERS) -> list[tuple[Loader, str]]:
    """Link or copy every installed loader into ``root``; returns (loader, what happened)."""
    root.mkdir(parents=True, exist_ok=True)
    done = []
    for loader in loaders:
        source = Path(loader.source).resolve()      # /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi
        target = root / loader.name
        if not source.is_file():
            done.append((loader, f"missing: install {loader.package}"))
            continue
        if target.is_file() and not target.is_symlink() and filecmp.cmp(source, target, shallow=False):
            done.append((loader, "up to date"))
            continue
        partial = root / f".{loader.name}.partial"
        partial.unlink(missing_ok=True)
        try:
            os.link(source, partial)
            how = "linked"
        except OSError:               # another filesystem, or hard links not allowed
            shutil.copyfile(source, partial)
            partial.chmod(0o644)      # never chmod a hard link: it is the package's own file
            how = "copied"
        os.replace(partial, target)
        done.append((loader, how))
    return done
