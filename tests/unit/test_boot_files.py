"""The served file namespace: confinement to the root, virtual configs, kernels, hot files."""

import os
from ipaddress import IPv4Address
from types import SimpleNamespace

import pytest

from bootserverd.boot import files as bf
from bootserverd.boot.files import BootFileError, BootFiles
from bootserverd.config.settings import Config, ServerConfig
from bootserverd.model.objects import Defaults, Device
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver
from bootserverd.boot.files import BootFileError, BootFiles, _hex_ip

MAC = "52:54:00:00:00:01"
IMAGE = "img-2026-01-01-000000-amd64"

TRAVERSALS = ["../secret", "/../secret", "..\\secret", "a/../../secret", "pxelinux.cfg/../../secret",
              "..", "./../secret", "a/./../..//secret", "\\..\\..\\secret", "images/../../secret",
              "foo/..", "x\x00.txt", "ok.txt\x00../../secret", "a" * 600]


@pytest.fixture
def files(tmp_path):
    root = tmp_path / "tftp"
    (root / "sub").mkdir(parents=True)
    (root / "pxelinux.0").write_bytes(b"loader v1")
    (root / "sub" / "file.bin").write_bytes(b"x" * 10)
    (tmp_path / "secret").write_text("do not serve")
    os.symlink(tmp_path / "secret", root / "escape")
    os.symlink("sub/file.bin", root / "inside-link")
    kernel, initrd = tmp_path / "vmlinuz", tmp_path / "initrd"
    kernel.write_bytes(b"K" * (bf.HOT_FILE_MAX + 1))
    initrd.write_bytes(b"I" * 100)
    image = SimpleNamespace(kernel=kernel, initrd=initrd)
    directory = InventoryRecords((Device(MAC, hostname="class-12", ip="10.0.0.57"),), {}, Defaults(image=IMAGE))
    model = Model(Inventory(directory, {IMAGE: image}, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=tmp_path))
    return BootFiles(root, BootResolver(config, model), model)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(files, path):
    with pytest.raises(BootFileError) as info:
        files.open(path, "10.0.0.9")
    assert info.value.kind == "access-denied"


def test_symlink_out_of_the_root_is_refused_inside_is_served(files):
    with pytest.raises(BootFileError) as info:
        files.open("escape", "10.0.0.9")
    assert info.value.kind == "access-denied"
    assert files.open("inside-link", "10.0.0.9").read(0, 100) == b"x" * 10


@pytest.mark.parametrize("path", ["pxelinux.0", "/pxelinux.0", "\\pxelinux.0", "./pxelinux.0", "//pxelinux.0"])
def test_path_forms_rom_clients_send(files, path):
    assert files.open(path, "10.0.0.9").read(0, 100) == b"loader v1"


def test_missing_and_directory_are_not_found(files):
    for path in ("nope", "sub", "sub/nope"):
        with pytest.raises(BootFileError) as info:
            files.open(path, "10.0.0.9")
        assert info.value.kind == "not-found"


def test_hot_file_is_refreshed_when_it_changes(files):
    first = files.open("pxelinux.0", "10.0.0.9")
    assert first.fileno() is None and first.read(0, 100) == b"loader v1"
    path = files.root / "pxelinux.0"
    path.write_bytes(b"loader version 2")
    os.utime(path, ns=(1, 1))
    assert files.open("pxelinux.0", "10.0.0.9").read(0, 100) == b"loader version 2"


def test_generated_configs_by_mac_ip_and_default(files):
    by_mac = files.open("pxelinux.cfg/01-52-54-00-00-00-01", "10.0.0.99").read(0, 4096).decode()
    assert "systemd.hostname=class-12" in by_mac
    by_ip = files.open("pxelinux.cfg/0A000039", "10.0.0.57").read(0, 4096).decode()
    prefix = files.open("pxelinux.cfg/0A00", "10.0.0.57").read(0, 4096).decode()
    default = files.open("pxelinux.cfg/default", "10.0.0.57").read(0, 4096).decode()
    assert by_mac.split("\n", 1)[1] == by_ip.split("\n", 1)[1] == prefix.split("\n", 1)[1] \
        == default.split("\n", 1)[1]
    stranger = files.open("pxelinux.cfg/default", "10.0.0.200").read(0, 4096).decode()
    assert "Boot from local disk" in stranger and "systemd.hostname" not in stranger
    ipxe = files.open("ipxe/52-54-00-00-00-01.ipxe", "10.0.0.57").read(0, 4096).decode()
    assert ipxe.startswith("#!ipxe") and "systemd.hostname=class-12" in ipxe
    assert files.open("ipxe/52:54:00:00:00:01.ipxe", "x").read(0, 4096) == ipxe.encode().replace(
        b"for 10.0.0.57", b"for x")
    grub = files.open("grub/grub.cfg-01-52-54-00-00-00-01", "10.0.0.57").read(0, 4096).decode()
    assert "menuentry" in grub and "systemd.hostname=class-12" in grub


def test_kernel_and_initrd_of_a_published_image(files):
    kernel = files.open(f"images/{IMAGE}/vmlinuz", "10.0.0.57")
    assert kernel.size == bf.HOT_FILE_MAX + 1 and kernel.fileno() is not None   # large: pread
    assert kernel.read(kernel.size - 2, 10) == b"KK"
    kernel.close()
    assert files.open(f"images/{IMAGE}/initrd.img", "10.0.0.57").read(0, 200) == b"I" * 100
    with pytest.raises(BootFileError) as info:
        files.open("images/unpublished/vmlinuz", "10.0.0.57")
    assert info.value.kind == "not-found"


# -- regression (fuzz_http): an IPv6 HTTP client asking for grub.cfg-<HEX> made _hex_ip raise
# (a 500 with a traceback). Fixed in bootserverd/bootfiles.py: such a client matches no prefix.

def test_hex_ip_of_ipv4_and_ipv6():
    assert _hex_ip("10.0.0.57") == "0A000039"
    assert _hex_ip("::1") == "" and _hex_ip("::ffff:10.0.0.57") == "" and _hex_ip("?") == ""


def test_ipv6_client_asking_for_a_hex_grub_config_gets_a_config(tmp_path):
    directory = InventoryRecords((Device("52:54:00:00:00:01", ip="10.0.0.57"),), {}, Defaults())
    model = Model(Inventory(directory, {}, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=tmp_path))
    files = BootFiles(tmp_path, BootResolver(config, model), model)
    assert files.open("grub.cfg-0A", "::1").read(0, 100)        # the generic (unknown) config
    with pytest.raises(BootFileError):
        files.open("pxelinux.cfg/zz", "::1")
