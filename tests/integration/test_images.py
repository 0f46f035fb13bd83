"""The image store on real squashfs images made with mksquashfs."""

import hashlib
import os

import pytest
from twisted.internet import defer, task

from bootserverd.images import store as images_mod
from bootserverd.images.store import ImageStore, scan_summary
from bootserverd.images.squashfs import find_boot_files
from tests.support.images import build_image

NAME = "bookworm-2026-11-20-101500-amd64"


def run_now(function, *args):
    """Index synchronously: the store's logic without a reactor thread."""
    return defer.maybeDeferred(function, *args)


@pytest.fixture
def store_dirs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "state").mkdir()
    return tmp_path / "images", tmp_path / "state"


def make_store(images_dir, state_dir, clock=None, settle=0.0):
    clock = clock or task.Clock()
    clock.advance(os.stat(images_dir).st_mtime + 3600)   # the fake clock starts "now"
    return ImageStore(images_dir, state_dir, clock, settle_seconds=settle, run_blocking=run_now), clock


def test_publish_extract_and_retire(store_dirs):
    images_dir, state_dir = store_dirs
    kernel, initrd = b"K" * 300_000, os.urandom(700_000)
    path = build_image(images_dir / f"{NAME}.img", kernel=kernel, initrd=initrd)
    store, _ = make_store(images_dir, state_dir)
    changes = []
    store.subscribe(lambda: changes.append([i.name for i in store.published()]))
    store.rescan()
    image = store.get(NAME)
    assert image is not None and changes == [[NAME]]
    assert image.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (image.series, image.version, image.arch) == ("bookworm", "2026-11-20-101500", "amd64")
    assert image.kernel.read_bytes() == kernel and image.initrd.read_bytes() == initrd
    assert image.kernel_source == "/boot/vmlinuz-6.1.0-18-amd64"
    assert image.kernel.parent.name == image.sha256          # cache keyed by sha256
    path.unlink()
    store.rescan()
    assert store.get(NAME) is None and changes[-1] == []
    assert not image.kernel.exists()                        # cache pruned with the image


def test_sha256_is_cached_across_restarts(store_dirs, monkeypatch):
    images_dir, state_dir = store_dirs
    build_image(images_dir / f"{NAME}.img")
    first, _ = make_store(images_dir, state_dir)
    first.rescan()
    sha = first.get(NAME).sha256
    hashed = []
    monkeypatch.setattr(images_mod, "sha256_file", lambda p: hashed.append(p) or "x")
    second, _ = make_store(images_dir, state_dir)
    second.rescan()
    assert second.get(NAME).sha256 == sha and hashed == []
    # a new version of the file (other inode/size/mtime) is hashed again
    build_image(images_dir / f"{NAME}.img", kernel=b"other kernel")
    third, _ = make_store(images_dir, state_dir)
    third.rescan()
    assert len(hashed) == 1


def test_corrupt_and_kernelless_files_are_skipped_and_logged_once(store_dirs, caplog):
    images_dir, state_dir = store_dirs
    (images_dir / "garbage.img").write_bytes(b"not a squashfs" * 100)
    build_image(images_dir / "nokernel.img", kernel_version=None)
    build_image(images_dir / f"{NAME}.img")
    old = os.stat(images_dir / f"{NAME}.img").st_mtime
    os.utime(images_dir / "garbage.img", (old, old))
    store, _ = make_store(images_dir, state_dir)
    logged = []
    from twisted.logger import globalLogPublisher
    globalLogPublisher.addObserver(logged.append)
    try:
        store.rescan()
        store.rescan()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [i.name for i in store.published()] == [NAME]
    skipped = [e for e in logged if "skipped" in e.get("log_format", "")]
    assert len(skipped) == 2, skipped          # once each, not once per scan
    reasons = {summary[0]: summary[2] for summary in scan_summary(images_dir)}
    assert reasons["garbage"] == "not a squashfs image"
    assert "no /boot/vmlinuz" in reasons["nokernel"] and reasons[NAME] == ""


def test_a_file_still_being_written_waits_until_it_settles(store_dirs):
    images_dir, state_dir = store_dirs
    path = build_image(images_dir / f"{NAME}.img")
    store, clock = make_store(images_dir, state_dir, settle=5.0)
    os.utime(path, (clock.seconds(), clock.seconds()))     # just written
    store.rescan()
    assert store.get(NAME) is None
    clock.advance(6)                                        # the retry scan runs
    assert store.get(NAME) is not None


def test_kernel_selection_prefers_links_then_newest_version(tmp_path):
    path = build_image(tmp_path / "a.img", kernel_version="6.1.0-9-amd64", links=False,
                       extra={"boot/vmlinuz-6.1.0-10-amd64": b"new", "boot/initrd.img-6.1.0-10-amd64": b"i",
                              "boot/vmlinuz-6.1.0-11-amd64": b"no initrd for this one"})
    assert find_boot_files(path) == ("/boot/vmlinuz-6.1.0-10-amd64", "/boot/initrd.img-6.1.0-10-amd64")
    linked = build_image(tmp_path / "b.img", kernel_version="6.1.0-9-amd64",
                         extra={"boot/vmlinuz-6.1.0-10-amd64": b"new", "boot/initrd.img-6.1.0-10-amd64": b"i"})
    assert find_boot_files(linked) == ("/boot/vmlinuz-6.1.0-9-amd64", "/boot/initrd.img-6.1.0-9-amd64")


def test_unsafe_names_and_hidden_files_are_not_published(store_dirs):
    images_dir, state_dir = store_dirs
    build_image(images_dir / "has space.img")
    build_image(images_dir / ".partial.img")
    store, _ = make_store(images_dir, state_dir)
    store.rescan()
    assert store.published() == []


def test_served_kernel_survives_retirement(store_dirs):
    """A TFTP/HTTP reader holding the kernel open keeps its bytes when the image goes away."""
    images_dir, state_dir = store_dirs
    path = build_image(images_dir / f"{NAME}.img", kernel=b"Z" * 50_000)
    store, _ = make_store(images_dir, state_dir)
    store.rescan()
    fd = os.open(store.get(NAME).kernel, os.O_RDONLY)
    try:
        path.unlink()
        store.rescan()
        assert os.pread(fd, 10, 49_990) == b"Z" * 10
    finally:
        os.close(fd)
