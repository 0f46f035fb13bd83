"""bootserverd-image-update when the laptop's disk fills up: the image directory is a small
tmpfs made here holding the current image and its backup. The disk is filled *while* the
updater writes (it is stopped with SIGSTOP once its temporary file appears, the test fills the
disk, then SIGCONT): the full download, and separately the `rdiff patch` output, run out of
space midway. Each time: exit 4 with a clear message, current image, backup and state file
unchanged, nothing under the new image's name, no temporary file left behind. The pre-flight
check refuses up front when the space is obviously too small."""
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.http import PYTHON, REPO, Daemon, change_tree, make_tree, mksquashfs, sha256

OLD, NEW, NEWER = (f"dsk-2026-0{i}-01-000000-amd64" for i in (1, 2, 3))
INVENTORY = f"""
defaults: {{type: laptop}}
devices:
  - {{mac: "52:54:00:00:02:01", hostname: pin-newer, image: {NEWER}}}
"""
LEAVE = 1 << 20                     # bytes left free when the test fills the disk mid-write


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("updater-disk")
    images = work / "images"
    images.mkdir()
    tree = work / "tree"
    make_tree(tree, seed=1, files=96, size=256 << 10)          # ~25 MiB images
    for seed, name in enumerate((OLD, NEW, NEWER), start=2):
        mksquashfs(tree, images / f"{name}.img")
        change_tree(tree, seed=seed)
    d = Daemon(work / "d", images, inventory=INVENTORY)
    status = 0
    end = time.monotonic() + 60                               # the NEW → NEWER diff, built once
    while status != 200 and time.monotonic() < end:
        status = d.get(f"/diffs/{NEW}--{NEWER}.rdiff", method="HEAD")[0]
        time.sleep(0.1)
    assert status == 200, d.log()
    yield d, images
    d.stop()


@pytest.fixture
def laptop(server, tmp_path):
    """A small tmpfs running NEW (marked good) with OLD as its backup."""
    from bootserverd_client.updater import State
    _, images = server
    size = (images / f"{NEWER}.img").stat().st_size
    mount = tmp_path / "laptop"
    mount.mkdir()
    # current + backup + what an update by diff needs (2 × image + reserve) + slack
    room = 4 * size + (6 << 20)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={room}", "bsd-upd-tmpfs", str(mount)], check=True)
    try:
        for name in (OLD, NEW):
            (mount / f"{name}.img").write_bytes((images / f"{name}.img").read_bytes())
        State(current=NEW, current_sha256=sha256(images / f"{NEW}.img"), backup=OLD,
              backup_sha256=sha256(images / f"{OLD}.img")).save(mount)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def snapshot(directory: Path) -> dict:
    return {"current": sha256(directory / f"{NEW}.img"), "backup": sha256(directory / f"{OLD}.img"),
            "state": (directory / "bootserverd-images.json").read_text()}


def free(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def fill(directory: Path, leave: int) -> int:
    """Take all free space but ``leave`` bytes (a file named without a dot: not ours)."""
    amount = max(free(directory) - leave, 0)
    with open(directory / "filler", "wb") as f:
        for _ in range(amount >> 20):
            f.write(b"\0" * (1 << 20))
        f.write(b"\0" * (amount & ((1 << 20) - 1)))
    return amount


def run_updater(d, directory: Path, *args: str) -> subprocess.Popen:
    # its own process group: SIGSTOP reaches the updater and its rdiff child together
    return subprocess.Popen([PYTHON, "-m", "bootserverd_client.updater", "--server", d.base, "--dir", str(directory),
                             "--device", "pin-newer", "--quiet", "--wait", "30", "--reserve", "1", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def fill_midway(proc: subprocess.Popen, temporary: Path, image_size: int) -> int:
    """Stop the updater once ``temporary`` exists, fill the disk, let it go on. Returns how far
    the temporary file had got when the disk filled up."""
    end = time.monotonic() + 30
    while not temporary.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, f"{temporary.name} never appeared"
        time.sleep(0.0002)
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        written = temporary.stat().st_size
        assert written < image_size - 2 * LEAVE, "the updater got too far before it was stopped"
        fill(temporary.parent, LEAVE)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    return written


def check_nothing_lost(directory: Path, before: dict) -> None:
    assert snapshot(directory) == before
    assert not (directory / f"{NEWER}.img").exists()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [f"{OLD}.img", f"{NEW}.img", "bootserverd-images.json", "filler"]), list(directory.iterdir())


def test_disk_full_during_the_full_download(server, laptop):
    d, images = server
    before = snapshot(laptop)
    proc = run_updater(d, laptop, "--full")
    written = fill_midway(proc, laptop / f".{NEWER}.img.part", (images / f"{NEWER}.img").stat().st_size)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, (out, err)
    assert "disk full" in err and "while writing" in err and "nothing was changed" in err, err
    assert "Traceback" not in err
    check_nothing_lost(laptop, before)
    assert json.loads(before["state"])["current"] == NEW
    print(f"download stopped at {written} bytes; disk filled")


def test_disk_full_while_patching(server, laptop):
    d, images = server
    before = snapshot(laptop)
    proc = run_updater(d, laptop)
    fill_midway(proc, laptop / f".{NEWER}.img.new", (images / f"{NEWER}.img").stat().st_size)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4, (out, err)
    assert "with a diff" in out and "disk full while patching" in err, (out, err)
    check_nothing_lost(laptop, before)


def test_preflight_refuses_when_space_is_obviously_short(server, laptop):
    d, images = server
    before = snapshot(laptop)
    fill(laptop, (images / f"{NEWER}.img").stat().st_size // 2)
    proc = run_updater(d, laptop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "not enough space" in err and "nothing was changed" in err, (out, err)
    check_nothing_lost(laptop, before)


def test_a_stale_full_download_is_not_counted_as_free_for_a_diff(server, laptop):
    # A partial full download of NEWER from an earlier attempt stays while a diff is patched:
    # counting it as free would pass the check and run out of space midway.
    d, images = server
    size = (images / f"{NEWER}.img").stat().st_size
    stale = laptop / f".{NEWER}.img.part"
    stale.write_bytes(b"\0" * size)
    fill(laptop, size + (2 << 20))          # enough with the stale file counted, too little without
    before = snapshot(laptop)
    proc = run_updater(d, laptop)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 4 and "not enough space" in err, (out, err)
    assert snapshot(laptop) == before and stale.stat().st_size == size
    assert not (laptop / f".{NEWER}.img.new").exists()
