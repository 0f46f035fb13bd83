"""bootserverd-image-update against the real daemon: full install, diff update (librsync),
resume checked by ETag, corrupted diffs rejected, a full disk, trial + rollback, live rollout."""
import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.http import PYTHON, REPO, Daemon, build_pair, sha256

OLD, NEW = "ser-2026-01-01-000000-amd64", "ser-2026-02-01-000000-amd64"
INVENTORY = f"""
defaults: {{image: {OLD}, next_image: {NEW}, type: laptop, rollout: {{hosts: [lap1], percent: 0}}}}
devices:
  - {{mac: "52:54:00:00:00:01", hostname: lap1}}
  - {{mac: "52:54:00:00:00:02", hostname: lap2}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("updater")
    images = work / "images"
    images.mkdir()
    build_pair(work, images, OLD, NEW)
    d = Daemon(work / "d", images, inventory=INVENTORY)
    yield d, images
    d.stop()


def updater(d, directory: Path, *args: str, device: str = "lap1") -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "bootserverd_client.updater", "--server", d.base, "--dir", str(directory),
                           "--device", device, "--quiet", "--wait", "30", "--reserve", "1", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def state(directory: Path) -> dict:
    return json.loads((directory / "bootserverd-images.json").read_text())


def installed(server, directory: Path, name: str = OLD) -> Path:
    """A laptop directory already running ``name`` (installed by the updater itself)."""
    d, images = server
    directory.mkdir(exist_ok=True)
    got = updater(d, directory, device="lap2")            # lap2 is outside the rollout: gets OLD
    assert got.returncode == 0, got.stderr
    assert state(directory)["current"] == name
    return directory / f"{name}.img"


def no_temporaries(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.startswith(".")]


def test_first_install_downloads_the_full_image(server, tmp_path):
    d, images = server
    image = installed(server, tmp_path / "laptop")
    assert sha256(image) == sha256(images / f"{OLD}.img")
    s = state(tmp_path / "laptop")
    assert s["trial"] is False and s["backup"] is None
    assert no_temporaries(tmp_path / "laptop")
    again = updater(d, tmp_path / "laptop", device="lap2")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_diff_update_trial_and_mark_good(server, tmp_path):
    d, images = server
    laptop = tmp_path / "laptop"
    installed(server, laptop)
    got = updater(d, laptop)                              # lap1 is a canary: moves to NEW
    assert got.returncode == 0, got.stderr
    assert "with a diff" in got.stdout
    assert sha256(laptop / f"{NEW}.img") == sha256(images / f"{NEW}.img")
    assert sha256(laptop / f"{OLD}.img") == sha256(images / f"{OLD}.img")     # the backup (A/B)
    s = state(laptop)
    assert (s["current"], s["backup"], s["trial"]) == (NEW, OLD, True)
    assert no_temporaries(laptop)
    assert "device 52:54:00:00:00:01 (lap1) runs ser-2026-01-01-000000-amd64" in d.log()
    # first boot of the trial image, then the system confirms it
    assert updater(d, laptop, "--boot-check").returncode == 0
    assert state(laptop)["trial_boots"] == 1
    assert updater(d, laptop, "--mark-good").returncode == 0
    assert state(laptop)["trial"] is False
    assert updater(d, laptop, "--boot-check").returncode == 0
    assert state(laptop)["current"] == NEW


def test_unconfirmed_trial_rolls_back_at_next_boot(server, tmp_path):
    d, images = server
    laptop = tmp_path / "laptop"
    installed(server, laptop)
    assert updater(d, laptop).returncode == 0
    assert updater(d, laptop, "--boot-check").returncode == 0     # boots the trial image once
    back = updater(d, laptop, "--boot-check")                     # next boot: never marked good
    assert back.returncode == 0 and "rolled back" in back.stdout
    s = state(laptop)
    assert (s["current"], s["backup"], s["trial"]) == (OLD, NEW, False)
    assert sha256(laptop / f"{OLD}.img") == sha256(images / f"{OLD}.img")
    # manual rollback swaps again
    assert updater(d, laptop, "--rollback").returncode == 0
    assert state(laptop)["current"] == NEW


def test_resume_is_checked_against_the_etag(server, tmp_path):
    d, images = server
    laptop = tmp_path / "laptop"
    laptop.mkdir()
    data = (images / f"{OLD}.img").read_bytes()
    etag = f'"{sha256(images / f"{OLD}.img")}"'
    part = laptop / f".{OLD}.img.part"
    part.write_bytes(data[:1000000])
    (laptop / f".{OLD}.img.part.etag").write_text(etag)
    got = updater(d, laptop, device="lap2")
    assert got.returncode == 0, got.stderr
    assert sha256(laptop / f"{OLD}.img") == sha256(images / f"{OLD}.img")
    assert f"range 1000000-{len(data) - 1}/{len(data)}" in d.log()
    # a partial file from another version of the image (or an error page): never appended to
    other = tmp_path / "other"
    other.mkdir()
    (other / f".{OLD}.img.part").write_bytes(b"<html>502 Bad Gateway</html>" * 100)
    (other / f".{OLD}.img.part.etag").write_text('"0000"')
    got = updater(d, other, device="lap2")
    assert got.returncode == 0, got.stderr
    assert sha256(other / f"{OLD}.img") == sha256(images / f"{OLD}.img")


def _cached_diff(d) -> Path:
    diffs = list((d.state / "diffs").glob("*.rdiff"))
    assert len(diffs) == 1
    return diffs[0]


def _wait_for_diff(d):
    end = time.monotonic() + 30
    while time.monotonic() < end:
        if d.get(f"/diffs/{OLD}--{NEW}.rdiff", method="HEAD")[0] == 200:
            return _cached_diff(d)
        time.sleep(0.1)
    raise AssertionError("diff not built")


def test_corrupted_diff_is_rejected_and_old_image_kept(server, tmp_path):
    d, images = server
    laptop = tmp_path / "laptop"
    old = installed(server, laptop)
    before = sha256(old)
    cached = _wait_for_diff(d)
    original = cached.read_bytes()
    meta_path = cached.with_name(cached.name + ".json")
    meta = meta_path.read_text()
    try:
        # 1. corrupted in place: the bytes no longer match the ETag the server sends
        corrupt = bytearray(original)
        for i in range(len(corrupt) // 2, len(corrupt) // 2 + 64):
            corrupt[i] ^= 0xFF
        cached.write_bytes(bytes(corrupt))
        got = updater(d, laptop)
        assert got.returncode == 3 and "does not match its ETag" in got.stderr
        assert sha256(old) == before and state(laptop)["current"] == OLD and no_temporaries(laptop)
        # 2. corrupted consistently (right ETag, wrong content): the patched image fails sha256
        info = json.loads(meta)
        info["sha256"] = sha256(cached)
        meta_path.write_text(json.dumps(info))
        got = updater(d, laptop)
        assert got.returncode == 3 and "rejected" in got.stderr, got.stderr
        assert sha256(old) == before and state(laptop)["current"] == OLD and no_temporaries(laptop)
        assert not (laptop / f"{NEW}.img").exists()
    finally:
        cached.write_bytes(original)
        meta_path.write_text(meta)


def test_full_disk_gives_a_clear_error_and_loses_nothing(server, tmp_path):
    d, images = server
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], check=True)
    try:
        old = installed(server, mount)
        before, state_before = sha256(old), state(mount)
        got = updater(d, mount)
        assert got.returncode == 4 and "not enough space" in got.stderr, got.stderr
        assert sha256(old) == before and state(mount) == state_before and no_temporaries(mount)
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_rollout_widening_is_live(server):
    d, _ = server
    assert d.json(f"/v1/devices/lap2?current={OLD}")["image"] == OLD
    d.inventory.write_text(INVENTORY.replace("percent: 0", "percent: 100"))
    try:
        d.wait(lambda: d.json(f"/v1/devices/lap2?current={OLD}")["image"] == NEW, 10, "rollout widened")
        d.inventory.write_text(INVENTORY.replace("percent: 0", "percent: 100") + f"images: {{{NEW}: {{release: withdrawn}}}}\n")
        d.wait(lambda: d.json("/v1/devices/lap1")["image"] == OLD, 10, "image withdrawn")
        assert d.json("/images/")["images"][1]["release"] == "withdrawn"
    finally:
        d.inventory.write_text(INVENTORY)
        d.wait(lambda: d.json("/v1/devices/lap1")["image"] == NEW, 10, "inventory restored")


def test_no_diff_to_be_had_falls_back_to_the_full_image(server, tmp_path):
    d, images = server
    laptop = tmp_path / "laptop"
    installed(server, laptop)
    for cached in (d.state / "diffs").glob("*.rdiff*"):      # evicted: the next request must rebuild
        cached.unlink()
    got = subprocess.run([PYTHON, "-m", "bootserverd_client.updater", "--server", d.base, "--dir", str(laptop),
                          "--device", "lap1", "--quiet", "--wait", "0", "--reserve", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert got.returncode == 0, got.stderr
    assert "no diff to be had" in got.stderr and "503" in got.stderr and f"downloading {NEW}" in got.stdout
    assert sha256(laptop / f"{NEW}.img") == sha256(images / f"{NEW}.img")
    assert state(laptop)["backup"] == OLD and no_temporaries(laptop)
