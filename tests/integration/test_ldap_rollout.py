"""Staged rollout driven by the directory (bootserverd profile): canaries while the next image is
in testing, a percentage widened centrally, the image withdrawn — each visible in the HTTP
service's /v1/devices/<mac> answers within 2 s (central slapd → slave → bootserverd)."""
import json
import time
import urllib.error
import urllib.request

import pytest
import yaml

from bootserverd.model.rollout import bucket
from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

OLD, NEW = "school-2026-01-01-000000-amd64", "school-2026-02-01-000000-amd64"
SCHOOL = f"ou=North,{BASE}"
IMAGE_ENTRY = f"bootserverdImageName={NEW},{BASE}"
MACS = [f"52:54:00:00:05:{i:02x}" for i in range(16)]


@pytest.fixture()
def pair():
    p = Pair()
    yield p
    p.cleanup()


def wanted(url: str, mac: str) -> str:
    """The image the device is told to run, or the error (images not scanned yet, device unknown)."""
    try:
        with urllib.request.urlopen(f"{url}/v1/devices/{mac}", timeout=5) as answer:
            return json.load(answer)["image"]
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:200]!r}"


def until(url: str, expected: dict[str, str], timeout: float = 2.0) -> float:
    """Seconds until every device's answer is ``expected[mac]``; fails after ``timeout``."""
    start = time.monotonic()
    while True:
        got = {mac: wanted(url, mac) for mac in expected}
        if got == expected:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {[(m, got[m]) for m in got if got[m] != expected[m]]}")
        time.sleep(0.05)


def test_rollout_from_the_directory_follows_central_changes(tmp_path, pair):
    config = write_config(tmp_path, http={"enabled": True})
    for name in (OLD, NEW):
        build_image(tmp_path / "images" / f"{name}.img")
    data = yaml.safe_load(config.read_text())
    data["inventory"] = {"source": "ldap", "ldap": {"uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
                                                    "password_file": str(pair.password_file(tmp_path))}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    url = f"http://{data['http']['listen']}"
    # the burn-in: the next image is in testing, only the canary host gets it
    pair.central.add(IMAGE_ENTRY, {"objectClass": "bootserverdImageEntry", "bootserverdImageName": NEW,
                                   "bootserverdReleaseState": "testing"})
    pair.central.add(SCHOOL, {"objectClass": ["organizationalUnit", "bootserverdSchoolSettings"], "ou": "North",
                              "bootserverdSchoolCode": "north", "bootserverdDefaultImage": OLD,
                              "bootserverdNextImage": NEW, "bootserverdRolloutPercent": "0",
                              "bootserverdRolloutHost": "pupil-3"})
    for i, mac in enumerate(MACS):
        pair.central.add(f"cn=pupil-{i},{SCHOOL}", device_attrs(f"pupil-{i}", mac))
    pair.wait_in_sync()
    with Daemon(config) as daemon:
        daemon.wait_for("in sync with the replica", timeout=10)
        until(url, {mac: NEW if i == 3 else OLD for i, mac in enumerate(MACS)}, timeout=5)
        # released and widened to 50 %: the canary plus exactly the devices hashed below 50
        inside = {mac for mac in MACS if bucket(mac, NEW) < 50} | {MACS[3]}
        assert 0 < len(inside) < len(MACS)
        pair.central.replace(IMAGE_ENTRY, {"bootserverdReleaseState": "released"})
        pair.central.replace(SCHOOL, {"bootserverdRolloutPercent": "50"})
        took = until(url, {mac: NEW if mac in inside else OLD for mac in MACS})
        with urllib.request.urlopen(f"{url}/v1/devices/{sorted(inside)[0]}", timeout=5) as answer:
            rollout = json.load(answer)["rollout"]
        assert rollout["assigned"] == OLD and rollout["in_rollout"] is True
        # withdrawn centrally: everyone falls back to the assigned image
        pair.central.replace(IMAGE_ENTRY, {"bootserverdReleaseState": "withdrawn"})
        until(url, {mac: OLD for mac in MACS})
        daemon.wait_for(f"directory: image {NEW} withdrawn", timeout=2)
        assert took < 2.0 and "Traceback" not in "\n".join(daemon.lines)
