"""SIGHUP as a sysadmin uses it: change one config section, reload, and all four protocols agree.

After each reload a known device asks every protocol what it boots, with real clients: DHCP (a
relayed iPXE DISCOVER over loopback), TFTP (curl: the pxelinux config), HTTP (curl: the iPXE
script and /images/) and NBD (nbdinfo --list). The image they name must be one NBD exports, at
the ports the config now says — the bug this guards against: images.dir changed, the configs
named the new image, NBD still exported the old directory's.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml

from dhcp import options as O
from dhcp.codec import Message, decode, encode
from tests.support.config import free_port, write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

MAC = "52:54:00:00:00:01"
OLD, NEW = "school-2026-01-01-000000-amd64", "school-2026-02-02-000000-amd64"
RELAY = "127.0.0.2"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two image directories, one image each (built once for the module)."""
    base = tmp_path_factory.mktemp("images")
    (base / "a").mkdir()
    (base / "b").mkdir()
    build_image(base / "a" / f"{OLD}.img")
    build_image(base / "b" / f"{NEW}.img")
    return base


def config_for(tmp: Path, images: Path, **override) -> Path:
    shutil.copytree(images / "a", tmp / "images", dirs_exist_ok=True)
    shutil.copytree(images / "b", tmp / "images-b", dirs_exist_ok=True)
    (tmp / "tftp-b").mkdir(exist_ok=True)
    (tmp / "tftp-b" / "hello.txt").write_text("from the new root\n")
    sections = dict(
        images={"default": OLD},
        tftp={"enabled": True},
        nbd={"enabled": True},
        http={"enabled": True},
        dhcp={"enabled": True, "interfaces": ["lo"], "listen_port": free_port(socket.SOCK_DGRAM),
              "subnets": [{"network": "127.0.0.0/8", "pool": ["127.0.0.100-127.0.0.200"]}]},
    )
    for key, value in override.items():
        sections[key] = {**sections.get(key, {}), **value}
    return write_config(tmp, inventory={"devices": [{"mac": MAC, "hostname": "pc-1"}]}, **sections)


def edit(config: Path, **changes) -> None:
    data = yaml.safe_load(config.read_text())
    for section, values in changes.items():
        data[section] = {**data[section], **values}
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def reload(daemon: Daemon, config: Path, **changes) -> None:
    edit(config, **changes)
    daemon.signal(signal.SIGHUP)
    daemon.wait_for("SIGHUP: configuration", timeout=20)


def port(config: Path, section: str) -> int:
    return int(str(yaml.safe_load(config.read_text())[section]["listen"]).rsplit(":", 1)[1])


def curl(url: str) -> str:
    proc = subprocess.run(["curl", "-sS", "--max-time", "5", url], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, f"{url}: {proc.stderr}"
    return proc.stdout


def nbd_exports(nbd_port: int) -> set[str]:
    proc = subprocess.run(["nbdinfo", "--list", "--json", f"nbd://127.0.0.1:{nbd_port}"],
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode == 0, proc.stderr
    return {e["export-name"] for e in json.loads(proc.stdout)["exports"]}


def dhcp_bootfile(dhcp_port: int) -> str:
    """The boot file our DHCP offers an iPXE client of MAC, asked as a relay agent would."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((RELAY, 67))
        sock.settimeout(0.5)
        for attempt in range(10):
            xid = 0x5EED0000 + attempt
            discover = Message(op=1, xid=xid, chaddr=bytes.fromhex(MAC.replace(":", "")),
                               giaddr=IPv4Address(RELAY), hops=1,
                               options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)), (77, b"iPXE"),
                                        (93, O.u16(0))))
            sock.sendto(encode(discover), ("127.0.0.1", dhcp_port))
            try:
                reply = decode(sock.recv(4096))
            except socket.timeout:
                continue
            if reply.xid == xid:
                name = reply.get(67)
                return (name or reply.file).rstrip(b"\0").decode()
    raise AssertionError("no OFFER from our DHCP service")


def assert_agree(config: Path, image: str, gone: str | None = None) -> None:
    """Every protocol names ``image`` for the device, at the configured address and ports, and
    NBD exports it."""
    data = yaml.safe_load(config.read_text())
    address = data["server"]["address"]
    http, nbd, tftp = port(config, "http"), port(config, "nbd"), port(config, "tftp")
    exports = nbd_exports(nbd)
    assert image in exports, exports
    if gone:
        assert gone not in exports
    nbdroot = f"nbdroot={address}:{nbd}/{image}"
    pxelinux = curl(f"tftp://127.0.0.1:{tftp}/pxelinux.cfg/01-{MAC.replace(':', '-')}")
    assert nbdroot in pxelinux, pxelinux
    script = curl(f"http://127.0.0.1:{http}/ipxe/{MAC.replace(':', '-')}.ipxe")
    assert nbdroot in script and f"{address}:{http}/" in script, script
    listing = curl(f"http://127.0.0.1:{http}/images/")
    assert image in listing and (gone is None or gone not in listing), listing
    if data["dhcp"]["enabled"]:
        assert dhcp_bootfile(data["dhcp"]["listen_port"]) == \
            f"http://{address}:{http}/ipxe/{MAC.replace(':', '-')}.ipxe"


def started(config: Path) -> Daemon:
    daemon = Daemon(config)
    daemon.wait_for("bootserverd started", timeout=20)
    daemon.wait_for(f"image {OLD} published", timeout=20)
    return daemon


def test_images_dir_and_default(tmp_path, images):
    config = config_for(tmp_path, images)
    with started(config) as daemon:
        assert_agree(config, OLD)
        reload(daemon, config, images={"dir": "../images-b", "default": NEW})
        assert f"image {NEW} published" in "\n".join(daemon.lines)   # before the reload's last line
        assert_agree(config, NEW, gone=OLD)


def test_images_default_alone(tmp_path, images):
    config = config_for(tmp_path, images)
    shutil.copy(images / "b" / f"{NEW}.img", tmp_path / "images")
    with started(config) as daemon:
        daemon.wait_for(f"image {NEW} published", timeout=20)
        reload(daemon, config, images={"default": NEW})
        assert_agree(config, NEW)


def test_tftp_root(tmp_path, images):
    config = config_for(tmp_path, images)
    with started(config) as daemon:
        reload(daemon, config, tftp={"root": "../tftp-b"})
        assert curl(f"tftp://127.0.0.1:{port(config, 'tftp')}/hello.txt") == "from the new root\n"
        assert_agree(config, OLD)


def test_inventory_source(tmp_path, images):
    config = config_for(tmp_path, images)
    shutil.copy(images / "b" / f"{NEW}.img", tmp_path / "images")
    (tmp_path / "etc" / "other.yaml").write_text(yaml.safe_dump(
        {"devices": [{"mac": MAC, "hostname": "pc-1", "image": NEW}]}))
    with started(config) as daemon:
        daemon.wait_for(f"image {NEW} published", timeout=20)
        assert_agree(config, OLD)
        reload(daemon, config, inventory={"file": "other.yaml"})
        assert_agree(config, NEW)


@pytest.mark.parametrize("section", ["tftp", "nbd", "http"])
def test_listen(tmp_path, images, section):
    config = config_for(tmp_path, images)
    kind = socket.SOCK_DGRAM if section == "tftp" else socket.SOCK_STREAM
    with started(config) as daemon:
        old_port = port(config, section)
        reload(daemon, config, **{section: {"listen": f"127.0.0.1:{free_port(kind)}"}})
        assert port(config, section) != old_port
        assert_agree(config, OLD)


def test_dhcp_listen_port(tmp_path, images):
    config = config_for(tmp_path, images)
    with started(config) as daemon:
        reload(daemon, config, dhcp={"listen_port": free_port(socket.SOCK_DGRAM)})
        assert_agree(config, OLD)


@pytest.mark.parametrize("section", ["nbd", "http", "tftp", "dhcp"])
def test_enabled_off_and_on(tmp_path, images, section):
    config = config_for(tmp_path, images)
    with started(config) as daemon:
        reload(daemon, config, **{section: {"enabled": False}})
        assert f"{section}: stopped" in "\n".join(daemon.lines)
        reload(daemon, config, **{section: {"enabled": True}})
        assert f"{section}: started" in "\n".join(daemon.lines)
        time.sleep(0.2)
        assert_agree(config, OLD)


def test_server_address_reaches_dhcp_and_configs(tmp_path, images):
    """server.address (the service address a VRRP pair moves) reaches the resolver and the DHCP
    and HTTP services at once: every protocol names the new address."""
    config = config_for(tmp_path, images, http={"listen": f"0.0.0.0:{free_port()}"},
                        nbd={"listen": f"0.0.0.0:{free_port()}"})
    with started(config) as daemon:
        reload(daemon, config, server={"address": "127.0.0.3"})
        assert_agree(config, OLD)
