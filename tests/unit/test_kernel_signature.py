"""The kernel signature check (bootserverd.images.signature) on bytes, against its real peer:
sbsigntool's ``sbverify --list`` on Debian's signed kernel, the same kernel after ``sbattach
--remove``, files that are no PE image, and cut or corrupted headers. Our verdict must be
sbverify's: a signature listed = SIGNED, "No signature table present" = UNSIGNED, the image
refused ("Can't open image") = NOT_PE."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bootserverd.images import signature
from bootserverd.images.signature import NOT_PE, SIGNED, UNSIGNED, inspect, inspect_bytes
from bootserverd.model.objects import Defaults, Device, InventoryRecords
from bootserverd.model.snapshot import Inventory
from tests.support.kernels import debian_signed_kernel, without_signature

PE_AT = 0x3C                        # e_lfanew


def sbverify(path: Path) -> str:
    done = subprocess.run(["sbverify", "--list", str(path)], capture_output=True, text=True, timeout=60)
    out = done.stdout + done.stderr
    if done.returncode == 0 and "signature 1" in done.stdout:
        return SIGNED
    if done.returncode == 0 and "No signature table present" in out:
        return UNSIGNED
    if done.returncode == 1 and "Can't open image" in out:
        return NOT_PE
    raise AssertionError(f"sbverify --list {path}: exit {done.returncode}: {out}")


def headers(data: bytes) -> tuple[int, int]:
    """(PE header offset, optional header offset)."""
    pe = struct.unpack_from("<I", data, PE_AT)[0]
    return pe, pe + 24


def patched(data: bytes, offset: int, new: bytes) -> bytes:
    return data[:offset] + new + data[offset + len(new):]


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("kernels")
    signed_path = shutil.copyfile(debian_signed_kernel(), tmp / "signed")
    signed = signed_path.read_bytes()
    pe, optional = headers(signed)
    return {"signed": signed, "unsigned": without_signature(signed_path, tmp / "unsigned").read_bytes(),
            # no PE image at all
            "elf": Path("/bin/true").read_bytes(), "text": b"#!/bin/sh\necho not a kernel\n" * 10,
            "random": bytes((i * 7919 + 13) % 251 for i in range(100_000)), "empty": b"",
            # headers cut short: inside the DOS header, inside the optional header, in the section table
            "cut 63": signed[:63], "cut 64": signed[:64], "cut 200": signed[:200], "cut 300": signed[:300],
            # headers corrupted (the rest of the kernel and its signature intact)
            "no MZ": patched(signed, 0, b"ZM"),
            "no PE signature": patched(signed, pe, b"PX\0\0"),
            "e_lfanew past the end": patched(signed, PE_AT, struct.pack("<I", len(signed) + 16)),
            "unknown optional header magic": patched(signed, optional, b"\x07\x01"),
            "optional header too small": patched(signed, pe + 20, struct.pack("<H", 100))}


CASES = ("signed", "unsigned", "elf", "text", "random", "empty", "cut 63", "cut 64", "cut 200", "cut 300",
         "no MZ", "no PE signature", "e_lfanew past the end", "unknown optional header magic",
         "optional header too small")
EXPECTED = {"signed": SIGNED, "unsigned": UNSIGNED}


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_sbverify(kernels, tmp_path, case):
    path = tmp_path / "vmlinuz"
    path.write_bytes(kernels[case])
    ours = inspect_bytes(kernels[case])
    assert ours == sbverify(path), case
    assert ours == EXPECTED.get(case, NOT_PE)


def test_the_real_kernel_is_judged_from_its_headers_and_table_only(kernels):
    reads = []

    def read(offset: int, size: int) -> bytes:
        reads.append((offset, size))
        return kernels["signed"][offset:offset + size]

    assert inspect(read) == SIGNED
    assert sum(size for _, size in reads) < 8192 < len(kernels["signed"]) // 100   # ~2 KiB of 8 MiB


def test_a_table_past_the_end_of_the_file_is_no_signature(kernels):
    # headers whole, the kernel (and its table) cut off: sbverify reads past its buffer here
    # (a segmentation fault on sbsigntool 0.9.4), so this case is checked without it
    assert inspect_bytes(kernels["signed"][:65536]) == UNSIGNED
    assert inspect_bytes(kernels["signed"][:-1]) == UNSIGNED


def security_entry(data: bytes) -> int:
    """Offset of data directory entry 4 (PE32+)."""
    return headers(data)[1] + 112 + 8 * 4


def test_the_certificate_entries_are_walked(kernels):
    signed = kernels["signed"]
    table_at, size = struct.unpack_from("<II", signed, security_entry(signed))
    length, revision, kind = struct.unpack_from("<IHH", signed, table_at)
    assert (kind, length) == (signature.PKCS_SIGNED_DATA, size)   # Debian's: one PKCS#7 entry
    x509 = struct.pack("<IHH", 16, 0x0200, 0x0001) + b"\0" * 8     # WIN_CERT_TYPE_X509, then the PKCS one
    body = signed[:table_at] + x509 + signed[table_at:]
    two = patched(body, security_entry(body), struct.pack("<II", table_at, size + 16))
    assert inspect_bytes(two) == SIGNED
    only_x509 = patched(signed, table_at + 6, struct.pack("<H", 0x0001))
    assert inspect_bytes(only_x509) == UNSIGNED
    zero_length = patched(signed, table_at, struct.pack("<I", 0))                # must not loop
    assert inspect_bytes(zero_length) == UNSIGNED
    overlong = patched(signed, table_at, struct.pack("<I", size + 8))
    assert inspect_bytes(overlong) == UNSIGNED
    no_entry = patched(signed, security_entry(signed), b"\0" * 8)
    assert inspect_bytes(no_entry) == UNSIGNED


def test_an_undeclared_security_entry_is_refused(kernels):
    # NumberOfRvaAndSizes ≤ 4: entry 4 is not part of the header (shim loads no image without
    # entry 5, the relocations; sbverify does not look at the count)
    signed = kernels["signed"]
    assert inspect_bytes(patched(signed, headers(signed)[1] + 108, struct.pack("<I", 4))) == NOT_PE


_HEAD = 1024


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mangled_headers_never_raise(kernels, data):
    signed = kernels["signed"]
    head = bytearray(signed[:_HEAD])
    for _ in range(data.draw(st.integers(1, 8))):
        head[data.draw(st.integers(0, 400))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.sampled_from([len(signed), _HEAD, 4096, 200_000]))
    assert inspect_bytes((bytes(head) + signed[_HEAD:])[:cut]) in (SIGNED, UNSIGNED, NOT_PE)


@given(st.binary(max_size=512))
def test_any_bytes_give_a_verdict(blob):
    assert inspect_bytes(blob) in (SIGNED, UNSIGNED, NOT_PE)
    assert inspect_bytes(b"MZ" + blob) in (SIGNED, UNSIGNED, NOT_PE)


# -- who is affected (pure, on a model snapshot) ----------------------------------------------

def _image(signed: dict[str, bool], default: str | None, kernels=None):
    kernels = {v: None for v in (kernels if kernels is not None else signed)}
    return SimpleNamespace(kernels=kernels, default_kernel_version=default, kernel_source="/boot/vmlinuz",
                           kernel_signed=signed)


def _inventory(devices, images, default_image="risky"):
    records = InventoryRecords(devices=tuple(devices), schools=MappingProxyType({}),
                               defaults=Defaults(image=default_image))
    return Inventory(records, images, None)


def test_exposed_devices_are_those_that_would_boot_an_unsigned_kernel():
    devices = [Device(f"52:54:00:00:00:{i:02x}", f"pc-{i:02d}") for i in range(14)]
    devices += [Device("52:54:00:00:01:01", "pinned", kernel_version="6.1.0-21-amd64"),   # a signed one
                Device("52:54:00:00:01:02", "off", enabled=False),
                Device("52:54:00:00:01:03", "elsewhere", image="fine"),
                Device("52:54:00:00:01:04", None, kernel_version="9.9-missing")]          # boots the default
    images = {"risky": _image({"6.1.0-18-amd64": False, "6.1.0-21-amd64": True}, "6.1.0-18-amd64"),
              "fine": _image({"6.1.0-21-amd64": True}, "6.1.0-21-amd64"), "fake": object()}
    found = signature.exposures(_inventory(devices, images))
    assert set(found) == {"risky"}
    risky = found["risky"]
    assert risky.kernels == ("6.1.0-18-amd64",) and risky.count == 15
    assert risky.devices == tuple(f"pc-{i:02d}" for i in range(10))       # bounded, sorted
    assert risky.line() == ("image risky: kernel 6.1.0-18-amd64 has NO Secure Boot signature: UEFI devices "
                            "with Secure Boot on cannot boot it; 15 devices assigned it, at risk if they boot "
                            "by UEFI: " + ", ".join(risky.devices) + " (+5 more)")
    assert risky.as_dict()["count"] == 15 and "52:54:00:00:01:04" not in risky.devices   # sorted: pc-* first


def test_an_unversioned_default_is_named_by_its_path_and_nobody_assigned_is_said():
    images = {"risky": _image({"/boot/vmlinuz": False}, None, kernels=())}
    [found] = signature.exposures(_inventory([], images)).values()
    assert found.kernels == ("/boot/vmlinuz",) and found.count == 0
    assert found.line().endswith("cannot boot it; no device is assigned it now")


def test_signed_images_cost_no_pass_over_the_devices():
    class Devices(tuple):
        def __iter__(self):
            raise AssertionError("devices walked")
    inventory = _inventory([], {"fine": _image({"6.1.0-21-amd64": True}, "6.1.0-21-amd64")})
    inventory.devices = Devices()
    assert signature.exposures(inventory) == {}
