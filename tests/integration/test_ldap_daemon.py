"""The directory drives the real daemon: central slapd → slave slapd (syncrepl) → bootserverd
(inventory.source: ldap) → the per-device pxelinux config fetched over TFTP with curl."""
import signal
import subprocess
import time

import pytest
import yaml

from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

IMAGE = "bookworm-2026-11-20-101500-amd64"
DEVICES = f"ou=Devices,{BASE}"
SCHOOL = f"ou=North,{BASE}"


def tftp_get(port: int, mac: str) -> str:
    name = "01-" + mac.replace(":", "-")
    result = subprocess.run(["curl", "-sS", "--max-time", "2", f"tftp://127.0.0.1:{port}/pxelinux.cfg/{name}"],
                            capture_output=True, text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    return result.stdout


def until(port: int, mac: str, predicate, timeout: float = 2.0) -> tuple[str, float]:
    """The config once ``predicate(config)`` holds, and how long that took; fails after timeout."""
    start = time.monotonic()
    while True:
        text = tftp_get(port, mac)
        if predicate(text):
            return text, time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s; last config:\n{text}")
        time.sleep(0.05)


@pytest.fixture()
def pair():
    p = Pair()
    p.central.add(DEVICES, {"objectClass": "organizationalUnit", "ou": "Devices"})
    p.central.add(SCHOOL, {"objectClass": ["organizationalUnit", "bootserverdSchoolSettings"], "ou": "North",
                           "bootserverdSchoolCode": "north", "bootserverdDefaultImage": "north-old"})
    yield p
    p.cleanup()


def daemon_config(tmp_path, pair):
    config = write_config(tmp_path, tftp={"enabled": True})
    data = yaml.safe_load(config.read_text())
    data["inventory"] = {"source": "ldap", "ldap": {"uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
                                                    "password_file": str(pair.password_file(tmp_path))}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config, int(data["tftp"]["listen"].rsplit(":", 1)[1])


def test_added_modified_deleted_and_school_default_follow_live(tmp_path, pair):
    config, port = daemon_config(tmp_path, pair)
    build_image(tmp_path / "images" / f"{IMAGE}.img")
    mac, pupil = "52:54:00:00:00:01", "52:54:00:00:00:02"
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started")
        daemon.wait_for("in sync with the replica", timeout=5)
        assert "not registered" in tftp_get(port, mac) or "Boot " in tftp_get(port, mac)
        # added centrally → its generated config within 2 s
        pair.central.add(f"cn=class-12,{DEVICES}", device_attrs("class-12", mac, bootserverdImage=IMAGE,
                                                                 bootserverdKernelArguments="quiet"))
        text, took = until(port, mac, lambda t: "systemd.hostname=class-12" in t)
        assert f"images/{IMAGE}/vmlinuz" in text and "quiet" in text and took < 2.0
        assert "device 52:54:00:00:00:01 (class-12) added" in daemon.wait_for("52:54:00:00:00:01", timeout=2)
        # modified → the new config
        pair.central.replace(f"cn=class-12,{DEVICES}", {"bootserverdKernelArguments": "splash",
                                                         "bootserverdEnabled": "FALSE"})
        text, _ = until(port, mac, lambda t: "is disabled" in t)
        assert "changed" in daemon.wait_for("52:54:00:00:00:01", timeout=2)
        # deleted → gone: the unknown-client menu
        pair.central.delete(f"cn=class-12,{DEVICES}")
        until(port, mac, lambda t: "class-12" not in t)
        assert "removed" in daemon.wait_for("52:54:00:00:00:01", timeout=2)
        # a school's default image changes → its devices follow
        pair.central.add(f"cn=pupil-1,{SCHOOL}", device_attrs("pupil-1", pupil))
        until(port, pupil, lambda t: "image north-old is not published" in t)
        pair.central.replace(SCHOOL, {"bootserverdDefaultImage": IMAGE})
        text, _ = until(port, pupil, lambda t: f"images/{IMAGE}/vmlinuz" in t)
        daemon.wait_for(f"school north changed: image {IMAGE}", timeout=2)
        # an image withdrawn in the directory is logged
        pair.central.add(f"bootserverdImageName={IMAGE},{BASE}", {
            "objectClass": "bootserverdImageEntry", "bootserverdImageName": IMAGE,
            "bootserverdReleaseState": "withdrawn"})
        daemon.wait_for(f"directory: image {IMAGE} withdrawn", timeout=2)
        assert daemon.proc.poll() is None
        assert "Traceback" not in "\n".join(daemon.lines)


def test_centre_down_school_keeps_booting_and_later_changes_arrive(tmp_path, pair):
    config, port = daemon_config(tmp_path, pair)
    mac = "52:54:00:00:00:11"
    pair.central.add(f"cn=h1,{DEVICES}", device_attrs("h1", mac, bootserverdImage="img-a"))
    pair.wait_in_sync()
    with Daemon(config) as daemon:
        daemon.wait_for("in sync with the replica", timeout=5)
        until(port, mac, lambda t: "image img-a" in t)
        pair.central.stop()
        time.sleep(0.3)
        assert "image img-a" in tftp_get(port, mac)           # the school keeps booting
        pair.central.start()
        pair.central.replace(f"cn=h1,{DEVICES}", {"bootserverdImage": "img-b"})
        _, took = until(port, mac, lambda t: "image img-b" in t, timeout=8)   # slave retry is 1 s
        assert daemon.proc.poll() is None


def test_restart_while_slave_down_serves_from_the_snapshot_then_catches_up(tmp_path, pair):
    config, port = daemon_config(tmp_path, pair)
    mac = "52:54:00:00:00:21"
    pair.central.add(f"cn=s1,{DEVICES}", device_attrs("s1", mac, bootserverdImage="img-s"))
    with Daemon(config) as daemon:
        daemon.wait_for("in sync with the replica", timeout=5)
        time.sleep(1.2)                                      # let the snapshot be written
    pair.slave.stop()
    with Daemon(config) as daemon:
        line = daemon.wait_for("from the snapshot of", timeout=5)
        assert "serving 1 devices" in line and "resume from its cookie" in line
        daemon.wait_for("unavailable", timeout=5)
        assert "image img-s" in until(port, mac, lambda t: "image img-s" in t)[0]
        pair.central.replace(f"cn=s1,{DEVICES}", {"bootserverdImage": "img-t"})
        pair.slave.start()
        daemon.wait_for("in sync with the replica", timeout=10)
        until(port, mac, lambda t: "image img-t" in t, timeout=3)


def test_restart_after_changes_receives_exactly_those_changes(tmp_path, pair):
    config, port = daemon_config(tmp_path, pair)
    macs = [f"52:54:00:00:01:{i:02x}" for i in range(6)]      # + the school: 7 entries
    for i, mac in enumerate(macs):
        pair.central.add(f"cn=r{i},{DEVICES}", device_attrs(f"r{i}", mac))
    with Daemon(config) as daemon:
        assert "7 entries, 7 changes received" in daemon.wait_for("in sync with the replica", timeout=5)
        time.sleep(1.2)
        daemon.signal(signal.SIGTERM)
        daemon.proc.wait(10)
    pair.central.replace(f"cn=r0,{DEVICES}", {"bootserverdImage": "new"})
    pair.central.delete(f"cn=r1,{DEVICES}")
    pair.central.add(f"cn=r9,{DEVICES}", device_attrs("r9", "52:54:00:00:01:99"))
    pair.wait_in_sync()
    with Daemon(config) as daemon:
        line = daemon.wait_for("in sync with the replica", timeout=5)
        assert "7 entries, 3 changes received" in line
        text = "\n".join(daemon.lines)
        assert "refreshing from the saved cookie" in text
        changes = [l for l in text.splitlines() if " device " in l and ("added" in l or "changed" in l or "removed" in l)]
        assert sorted(changes[i].split(" device ", 1)[1] for i in range(len(changes))) == [
            "52:54:00:00:01:00 (r0) changed", "52:54:00:00:01:01 (r1) removed", "52:54:00:00:01:99 (r9) added"]
