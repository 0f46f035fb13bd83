"""A GRUB netboot image that has the http module, for the e2e lab: Debian's signed
grubnetx64.efi has only tftp, so the grub.cfg bootserverd renders tries HTTP and falls back to
TFTP; this image, made with grub-mkimage from grub-efi-amd64-bin, proves the HTTP branch
(unsigned: it boots with Secure Boot off only)."""

from __future__ import annotations

import subprocess
from pathlib import Path

NAME = "grubhttpx64.efi"
# What the rendered grub.cfg uses, the network stack, and the prefix Debian's image has (/grub).
MODULES = ("normal", "configfile", "echo", "test", "sleep", "linux", "net", "efinet", "tftp", "http")


def build(tftp_root: Path) -> Path:
    target = tftp_root / NAME
    subprocess.run(["grub-mkimage", "-O", "x86_64-efi", "-p", "/grub", "-o", str(target), *MODULES],
                   check=True, capture_output=True, timeout=60)
    return target
