"""Does an image's kernel carry a Secure Boot signature, and which devices would boot one that does not.

UEFI PCs with Secure Boot on boot through shim (Microsoft-signed) → Debian's signed GRUB → the
image's kernel, which GRUB has shim verify: a kernel without an Authenticode signature stops
there. A PE/COFF file carries its signatures in the certificate table that the optional
header's data directory entry 4 (IMAGE_DIRECTORY_ENTRY_SECURITY, a file offset and a size)
points at: a list of WIN_CERTIFICATE entries (dwLength, wRevision, wCertificateType, data),
each 8-byte aligned; an Authenticode signature is one of type WIN_CERT_TYPE_PKCS_SIGNED_DATA.

What is checked is that such a signature is **present**, not that it is valid: the PKCS#7 data is
not parsed, the image hash not computed, no key consulted. shim and GRUB do the verification; a
kernel signed by a key shim does not trust (not Debian's, not in the MOK list) still fails to
boot. So "signed" here means "has a signature" — an unsigned kernel certainly fails, a signed
one is expected to pass when it comes from Debian's linux-image-amd64.

Pure: the caller hands in ``read(offset, size) -> bytes`` (fewer bytes at the end of the file)
and only the headers and the certificate table are read — a few KiB of a 8 MiB kernel.
``tests/unit/test_kernel_signature.py`` compares the verdicts with sbsigntool's ``sbverify --list``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable

SIGNED, UNSIGNED, NOT_PE = "signed", "unsigned", "not a PE image"
PKCS_SIGNED_DATA = 0x0002           # WIN_CERTIFICATE.wCertificateType of an Authenticode signature
SECURITY_ENTRY = 4                  # IMAGE_DIRECTORY_ENTRY_SECURITY
MAX_TABLE = 1 << 20                 # certificate table bytes looked at (a kernel's is ~1.5 KiB)
_DIRECTORIES = {0x10B: 92, 0x20B: 108}   # optional header magic (PE32, PE32+) → NumberOfRvaAndSizes offset
LISTED = 10                         # devices named per image (the count says how many more)

Read = Callable[[int, int], bytes]


def inspect(read: Read) -> str:
    """SIGNED, UNSIGNED (a PE image without a PKCS signed-data certificate, or whose table is
    missing from the file) or NOT_PE (no MZ/PE headers, or headers cut short or malformed:
    no EFI stub a firmware or shim would load). Never raises on malformed input."""
    dos = read(0, 64)
    if len(dos) < 64 or dos[:2] != b"MZ":
        return NOT_PE
    pe = struct.unpack_from("<I", dos, 0x3C)[0]
    coff = read(pe, 24)
    if len(coff) < 24 or coff[:4] != b"PE\0\0":
        return NOT_PE
    sections, optional_size = struct.unpack_from("<H", coff, 6)[0], struct.unpack_from("<H", coff, 20)[0]
    optional = read(pe + 24, optional_size)
    if len(optional) < optional_size or len(optional) < 2:
        return NOT_PE
    count_at = _DIRECTORIES.get(struct.unpack_from("<H", optional, 0)[0])
    entry = (count_at or 0) + 4 + 8 * SECURITY_ENTRY
    if count_at is None or optional_size < entry + 8:
        return NOT_PE               # no room for the security entry (sbverify refuses it too)
    if struct.unpack_from("<I", optional, count_at)[0] <= SECURITY_ENTRY:
        return NOT_PE               # entry 4 is not declared (shim loads no image without entry 5)
    table_end = pe + 24 + optional_size + 40 * sections
    if sections and len(read(table_end - 1, 1)) != 1:
        return NOT_PE               # the section table is cut off
    offset, size = struct.unpack_from("<II", optional, entry)
    if offset == 0 or size == 0:
        return UNSIGNED
    wanted = min(size, MAX_TABLE)
    table = read(offset, wanted)
    if len(table) < wanted:
        return UNSIGNED             # the table lies past the end of the file
    return SIGNED if has_signed_data(table) else UNSIGNED


def inspect_bytes(data: bytes) -> str:
    """``inspect`` of a whole file held in memory."""
    return inspect(lambda offset, size: data[offset:offset + size])


def has_signed_data(table: bytes) -> bool:
    """A WIN_CERTIFICATE of type PKCS signed data, whole, among the table's entries."""
    at = 0
    while at + 8 <= len(table):
        length, _revision, kind = struct.unpack_from("<IHH", table, at)
        if length <= 8 or at + length > len(table):
            return False            # an empty or overlong entry: the rest cannot be walked
        if kind == PKCS_SIGNED_DATA:
            return True
        at += (length + 7) & ~7
    return False


# -- who is affected -------------------------------------------------------------------------

def booted_kernel(image, wanted: str | None) -> str:
    """The label (a version, or for an unversioned default its path inside the image) of the
    kernel a device wanting ``wanted`` boots from ``image``: the resolver's rule, a version the
    image lacks boots the default."""
    kernels = getattr(image, "kernels", None) or {}
    if wanted and wanted in kernels:
        return wanted
    return getattr(image, "default_kernel_version", None) or getattr(image, "kernel_source", "")


@dataclass(frozen=True)
class Exposure:
    """An image with kernels that have no signature, and the devices that would boot one.

    DHCP's client architecture (option 93) is not recorded per device, so every enabled device
    assigned the image (the model's image_for) whose kernel choice is unsigned is named: each
    is at risk if it boots by UEFI with Secure Boot on."""
    image: str
    kernels: tuple[str, ...]        # the image's kernels without a signature
    devices: tuple[str, ...]        # the first LISTED of them by hostname (then MACs of those without)
    count: int                      # all of them

    def who(self) -> str:
        """'14 devices assigned it, at risk if they boot by UEFI: pc-1, pc-7 (+12 more)'."""
        if not self.count:
            return "no device is assigned it now"
        more = self.count - len(self.devices)
        many = self.count != 1
        return (f"{self.count} device{'s' if many else ''} assigned it, at risk if "
                f"{'they boot' if many else 'it boots'} by UEFI: "
                + ", ".join(self.devices) + (f" (+{more} more)" if more else ""))

    def line(self) -> str:
        """The warning logged when the image is published: what, why it matters, who."""
        kernels = ", ".join(self.kernels)
        subject = f"kernel {kernels} has" if len(self.kernels) == 1 else f"kernels {kernels} have"
        return (f"image {self.image}: {subject} NO Secure Boot signature: UEFI devices with Secure Boot on "
                f"cannot boot it; {self.who()}")

    def as_dict(self) -> dict:
        return {"unsigned_kernels": list(self.kernels), "devices": list(self.devices), "count": self.count,
                "note": "devices assigned this image whose kernel has no signature; which boot by UEFI "
                        "is not recorded: each is at risk if it does, with Secure Boot on"}


def exposures(inventory, listed: int = LISTED) -> dict[str, Exposure]:
    """image name → Exposure, for each of the inventory's images with an unsigned kernel. One
    pass over the devices, and none when every kernel has a signature."""
    unsigned: dict[str, set[str]] = {}
    for name, image in inventory.images.items():
        labels = {label for label, signed in (getattr(image, "kernel_signed", None) or {}).items() if not signed}
        if labels:
            unsigned[name] = labels
    if not unsigned:
        return {}
    found: dict[str, list[tuple[bool, str]]] = {name: [] for name in unsigned}   # devices with a hostname first
    for device in inventory.devices:
        if not device.enabled:
            continue
        name = inventory.image_for(device)
        if name in unsigned and booted_kernel(inventory.images[name],
                                              inventory.kernel_version_for(device)) in unsigned[name]:
            found[name].append((not device.hostname, device.hostname or device.mac))
    return {name: Exposure(name, tuple(sorted(unsigned[name])),
                           tuple(label for _, label in sorted(found[name])[:listed]), len(found[name]))
            for name in unsigned}
