"""Virtual boot files over TFTP through the real BootFiles: per-MAC / per-IP configs, the
disabled-device error menu, kernels and initrds of images, hot files refreshed on change."""
import hashlib
import os
import subprocess

import pytest
import tftpy

from tests.support.tftp import Server

IMAGE = "bionic-2026-01-01-000000-amd64"
MAC, OFF = "52:54:00:00:00:01", "52:54:00:00:00:02"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("tftpboot")
    root = base / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(b"loader v1" * 100)
    kernel, initrd = base / "vmlinuz", base / "initrd.img"
    kernel.write_bytes(os.urandom(6 * 1024 * 1024 + 3))      # above the hot-file size: pread
    initrd.write_bytes(os.urandom(200_000))                     # served from memory
    inventory = {
        "devices": [{"mac": MAC, "hostname": "class-12", "ip": "127.0.0.1"},
                    {"mac": OFF, "hostname": "off-1", "enabled": False}],
        "images": {IMAGE: {"kernel": str(kernel), "initrd": str(initrd)}},
        "default_image": IMAGE,
    }
    s = Server(root, "--max-blksize", "8192", inventory=inventory)
    s.kernel, s.initrd = kernel, initrd
    yield s
    s.stop()


def get(server, name, tmp_path, **options) -> bytes:
    out = tmp_path / "out"
    tftpy.TftpClient("127.0.0.1", server.port, options=options).download(name, str(out),
                                                                         timeout=5)
    return out.read_bytes()


@pytest.mark.parametrize("name", ["pxelinux.cfg/01-52-54-00-00-00-01",
                                  "pxelinux.cfg/7F000001", "pxelinux.cfg/7F0",
                                  "/pxelinux.cfg\\default"])
def test_config_for_the_device_by_mac_ip_prefix_and_default(server, tmp_path, name):
    text = get(server, name, tmp_path).decode()
    assert "systemd.hostname=class-12" in text and f"images/{IMAGE}/vmlinuz" in text


def test_disabled_device_gets_the_error_menu_not_silence(server, tmp_path):
    text = get(server, "pxelinux.cfg/01-52-54-00-00-00-02", tmp_path, blksize=1468).decode()
    assert "is disabled" in text and "LABEL error" in text


def test_kernel_and_initrd_from_the_image(server, tmp_path):
    for leaf, src in (("vmlinuz", server.kernel), ("initrd.img", server.initrd)):
        out = tmp_path / leaf
        r = subprocess.run(["atftp", "--option", "windowsize 16", "--option", "blksize 8192",
                            "-g", "-r", f"images/{IMAGE}/{leaf}", "-l", str(out), "127.0.0.1",
                            str(server.port)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(src.read_bytes()).digest()


def test_unpublished_image_is_not_found(server, tmp_path):
    with pytest.raises(tftpy.TftpException, match="File not found"):
        get(server, "images/nope/vmlinuz", tmp_path)


def test_hot_file_is_refreshed_when_it_changes(server, tmp_path):
    assert get(server, "pxelinux.0", tmp_path) == b"loader v1" * 100
    path = server.root / "pxelinux.0"
    path.write_bytes(b"loader v2" * 100)
    os.utime(path, ns=(1, 1))
    assert get(server, "pxelinux.0", tmp_path) == b"loader v2" * 100
