"""How far a boot got, in the stages a sysadmin reads: DHCP → loader → kernel → NBD root → booted.

Pure: a transfer's service and path say which stage it belongs to. The server sees a boot up
to the root being attached; "booted" is that root still in use ``booted_after`` seconds later
(a kernel that cannot start the image gives up well before), see BootReport.
"""

from __future__ import annotations

import re

STAGES = ("dhcp", "loader", "kernel", "root", "booted")
LABELS = {"dhcp": "DHCP", "loader": "boot loader", "kernel": "kernel and initrd", "root": "NBD root",
          "booted": "booted"}
_RANK = {stage: i for i, stage in enumerate(STAGES)}
# a kernel or an initrd by its file name, on every path (iPXE/GRUB over HTTP, pxelinux over TFTP)
_KERNEL_FILE = re.compile(r"(?:^|/)(?:vmlinu[xz]|linux|bzImage|kernel|initrd|initramfs)[^/]*$")


# Files boot loaders ask for on every boot and go on without: shim's revocation and
# certificate updates, GRUB's module lists and modules (Debian's signed GRUB has its modules
# built in), its fonts and translations. A miss is routine, not an event.
_OPTIONAL_FILE = re.compile(
    r"(?:^|/)(?:revocations_\w+\.efi|shim_certificate\w*\.efi|[\w-]+\.(?:lst|mod|mo|pf2)|grubenv)$")


def optional_file(path: str) -> bool:
    """A file a loader probes for and does without (its miss is logged at debug level)."""
    return bool(_OPTIONAL_FILE.search(path))


def stage_of(kind: str, what: str) -> str:
    """The stage of one boot event: ``kind`` dhcp | tftp | http | nbd, ``what`` its file or export."""
    if kind in ("dhcp", "nbd"):
        return "dhcp" if kind == "dhcp" else "root"
    return "kernel" if _KERNEL_FILE.search(what) else "loader"


def furthest(stages) -> str | None:
    """The latest of ``stages`` in boot order (None for none)."""
    return max(stages, key=_RANK.__getitem__, default=None)
