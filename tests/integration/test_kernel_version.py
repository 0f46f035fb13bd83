"""The device's kernel version picks the kernel inside a real squashfs holding two kernels,
through the shipped daemon: TFTP (curl) and HTTP (curl) return that kernel's bytes; a device
without a version gets the image's default; a version the image lacks boots the default with
one warning; and the same from the directory (real slapd pair, bootserverdKernelVersion)."""
import hashlib
import os
import subprocess
import time

import pytest
import yaml

from bootserverd.images.squashfs import find_kernels
from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

IMAGE = "bookworm-2026-11-20-101500-amd64"
OLD, NEW, MISSING = "6.1.0-18-amd64", "6.1.0-21-amd64", "6.1.0-99-amd64"
PINNED, PLAIN, WRONG = "52:54:00:00:00:01", "52:54:00:00:00:02", "52:54:00:00:00:03"
BYTES = {OLD: (b"kernel-18 " + os.urandom(300_000), b"initrd-18 " + os.urandom(200_000)),
         NEW: (b"kernel-21 " + os.urandom(5 << 20), b"initrd-21 " + os.urandom(150_000))}   # 5 MiB: pread path


def curl(url: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", "-o", "-", url],
                          capture_output=True, timeout=30)


def fetch(url: str) -> bytes:
    result = curl(url)
    assert result.returncode == 0, (url, result.stderr)
    return result.stdout


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def two_kernel_image(path):
    return build_image(path, kernel_version=OLD, kernel=BYTES[OLD][0], initrd=BYTES[OLD][1],
                       more_kernels={NEW: BYTES[NEW]})


def test_the_image_index_finds_every_kernel_pair(tmp_path):
    path = two_kernel_image(tmp_path / "a.img")
    found = find_kernels(path)
    assert found.default == (f"/boot/vmlinuz-{OLD}", f"/boot/initrd.img-{OLD}") and found.default_version == OLD
    assert dict(found.versions) == {v: (f"/boot/vmlinuz-{v}", f"/boot/initrd.img-{v}") for v in (OLD, NEW)}
    # a kernel without its initrd, or a name no URL can carry, is not offered
    odd = build_image(tmp_path / "b.img", kernel_version=OLD, links=False, extra={
        "/boot/vmlinuz-7.0-lonely": b"k", "/boot/vmlinuz-bad name": b"k", "/boot/initrd.img-bad name": b"i"})
    assert set(find_kernels(odd).versions) == {OLD}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kver")
    inventory = {"defaults": {"image": IMAGE},
                 "devices": [{"mac": PINNED, "hostname": "pinned", "kernel_version": NEW},
                             {"mac": PLAIN, "hostname": "plain"},
                             {"mac": WRONG, "hostname": "wrong", "kernel_version": MISSING}]}
    config = write_config(tmp, inventory, tftp={"enabled": True}, http={"enabled": True})
    data = yaml.safe_load(config.read_text())
    two_kernel_image(tmp / "images" / f"{IMAGE}.img")
    with Daemon(config) as d:
        d.tftp = f"tftp://127.0.0.1:{data['tftp']['listen'].rsplit(':', 1)[1]}"
        d.http = f"http://127.0.0.1:{data['http']['listen'].rsplit(':', 1)[1]}"
        d.state = tmp / "state"
        d.wait_for("bootserverd started", timeout=10)
        published = d.wait_for(f"image {IMAGE} published", timeout=20)
        assert f"kernels: {OLD} (default), {NEW}" in published
        yield d
        assert "Traceback" not in "\n".join(d.lines)


def config_name(mac: str) -> str:
    return "01-" + mac.replace(":", "-")


def test_pinned_device_gets_its_kernel_over_tftp_and_http(daemon):
    pxelinux = fetch(f"{daemon.tftp}/pxelinux.cfg/{config_name(PINNED)}").decode()
    assert f"KERNEL images/{IMAGE}/vmlinuz-{NEW}\n" in pxelinux
    assert f"INITRD images/{IMAGE}/initrd.img-{NEW}\n" in pxelinux
    for url in (f"{daemon.tftp}/images/{IMAGE}/vmlinuz-{NEW}", f"{daemon.http}/boot/{IMAGE}/vmlinuz-{NEW}"):
        assert digest(fetch(url)) == digest(BYTES[NEW][0]), url
    for url in (f"{daemon.tftp}/images/{IMAGE}/initrd.img-{NEW}", f"{daemon.http}/boot/{IMAGE}/initrd.img-{NEW}"):
        assert fetch(url) == BYTES[NEW][1], url
    # iPXE: the URLs in its script are the ones that serve those bytes
    script = fetch(f"{daemon.http}/ipxe/{PINNED.replace(':', '-')}.ipxe").decode()
    urls = [word for line in script.splitlines() for word in line.split() if "/boot/" in word]
    assert [u.rsplit("/", 1)[1] for u in urls] == [f"vmlinuz-{NEW}", f"initrd.img-{NEW}"], script
    assert digest(fetch(urls[0])) == digest(BYTES[NEW][0]) and fetch(urls[1]) == BYTES[NEW][1]


def test_image_listing_names_its_kernels(daemon):
    import json
    [image] = json.loads(fetch(f"{daemon.http}/images/"))["images"]
    assert image["kernels"] == [OLD, NEW] and image["default_kernel"] == OLD


def test_device_without_a_version_gets_the_default(daemon):
    pxelinux = fetch(f"{daemon.tftp}/pxelinux.cfg/{config_name(PLAIN)}").decode()
    assert f"KERNEL images/{IMAGE}/vmlinuz\n" in pxelinux and "vmlinuz-" not in pxelinux
    for url in (f"{daemon.tftp}/images/{IMAGE}/vmlinuz", f"{daemon.http}/boot/{IMAGE}/vmlinuz"):
        assert fetch(url) == BYTES[OLD][0]
    assert fetch(f"{daemon.tftp}/images/{IMAGE}/vmlinuz-{OLD}") == BYTES[OLD][0]


def test_unknown_versions_are_not_found_over_tftp_and_http(daemon):
    for leaf in (f"vmlinuz-{MISSING}", "initrd.img-..", "vmlinuz-"):
        result = curl(f"{daemon.tftp}/images/{IMAGE}/{leaf}")
        assert result.returncode == 68, (leaf, result.stderr)       # curl's CURLE_TFTP_NOTFOUND
        http = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                               f"{daemon.http}/boot/{IMAGE}/{leaf}"], capture_output=True, text=True, timeout=20)
        assert http.stdout == "404", (leaf, http.stdout)
    http = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
                           "--path-as-is", f"{daemon.http}/boot/{IMAGE}/vmlinuz-../../etc/passwd"],
                          capture_output=True, text=True, timeout=20)
    assert http.stdout in ("403", "404")


def test_missing_version_boots_the_default_and_warns_once(daemon):
    for _ in range(3):
        pxelinux = fetch(f"{daemon.tftp}/pxelinux.cfg/{config_name(WRONG)}").decode()
        assert f"KERNEL images/{IMAGE}/vmlinuz\n" in pxelinux
    fetch(f"{daemon.http}/ipxe/{WRONG.replace(':', '-')}.ipxe")
    line = daemon.wait_for("wants kernel", timeout=5)
    assert WRONG in line and "wrong" in line and MISSING in line and f"{OLD} (default), {NEW}" in line
    fetch(f"{daemon.tftp}/pxelinux.cfg/{config_name(PLAIN)}")     # a marker after the repeats
    daemon.wait_for(config_name(PLAIN), timeout=5)
    assert sum("wants kernel" in line for line in daemon.lines) == 1


def test_extracted_kernels_share_the_cache_directory_of_the_image(daemon):
    [entry] = (daemon.state / "boot").iterdir()
    names = sorted(p.name for p in entry.iterdir())
    assert names == ["initrd.img", f"initrd.img-{OLD}", f"initrd.img-{NEW}", "vmlinuz", f"vmlinuz-{OLD}",
                     f"vmlinuz-{NEW}"]
    assert (entry / "vmlinuz").stat().st_ino == (entry / f"vmlinuz-{OLD}").stat().st_ino   # no second copy


def test_directory_kernel_version_reaches_the_generated_config(tmp_path):
    from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
    pair = Pair()
    try:
        devices = f"ou=Devices,{BASE}"
        pair.central.add(devices, {"objectClass": "organizationalUnit", "ou": "Devices"})
        pair.central.add(f"cn=pinned,{devices}", device_attrs("pinned", PINNED, bootserverdImage=IMAGE,
                                                                bootserverdKernelVersion=NEW))
        pair.central.add(f"cn=plain,{devices}", device_attrs("plain", PLAIN, bootserverdImage=IMAGE))
        config = write_config(tmp_path, tftp={"enabled": True})
        data = yaml.safe_load(config.read_text())
        data["inventory"] = {"source": "ldap", "ldap": {
            "uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
            "password_file": str(pair.password_file(tmp_path))}}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        two_kernel_image(tmp_path / "images" / f"{IMAGE}.img")
        tftp = f"tftp://127.0.0.1:{data['tftp']['listen'].rsplit(':', 1)[1]}"
        with Daemon(config) as daemon:
            daemon.wait_for("bootserverd started", timeout=10)
            deadline = time.monotonic() + 15          # image indexed and replica read, in either order
            while f"KERNEL images/{IMAGE}/vmlinuz-{NEW}\n" not in (
                    pinned := fetch(f"{tftp}/pxelinux.cfg/{config_name(PINNED)}").decode()):
                assert time.monotonic() < deadline, pinned
                time.sleep(0.1)
            assert f"KERNEL images/{IMAGE}/vmlinuz\n" in fetch(f"{tftp}/pxelinux.cfg/{config_name(PLAIN)}").decode()
            assert digest(fetch(f"{tftp}/images/{IMAGE}/vmlinuz-{NEW}")) == digest(BYTES[NEW][0])
    finally:
        pair.cleanup()
