"""http.update_rate against the real daemon with curl: image downloads together get the
configured rate, take turns, and a boot file fetched meanwhile does not wait for them; on the
sendfile and the copy path."""
import os
import subprocess
import time

import pytest

from tests.support.http import Daemon, curl, make_tree, mksquashfs, sha256

BIG, OLD = "big-2026-01-01-000000-amd64", "old-2026-01-01-000000-amd64"
MB = 1_000_000


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    work = tmp_path_factory.mktemp("rate-images")
    images = work / "images"
    images.mkdir()
    make_tree(work / "big", seed=11, files=64, size=256 << 10)     # ~16 MB that does not compress
    mksquashfs(work / "big", images / f"{BIG}.img")
    return images


def download(daemon, name: str, out) -> subprocess.Popen:
    return subprocess.Popen(["curl", "-sf", "-o", str(out), "-w", "%{time_total}", daemon.url(f"/images/{name}.img")],
                            stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sendfile", [True, False])
def test_downloads_together_get_the_update_rate_in_turns_and_boot_files_do_not_wait(images, tmp_path, sendfile):
    size = (images / f"{BIG}.img").stat().st_size
    rate = 8 * MB
    d = Daemon(tmp_path, images, http_extra=f"  update_rate: 8MB/s\n  sendfile: {str(sendfile).lower()}\n")
    (tmp_path / "tftp" / "loader.efi").write_bytes(os.urandom(4 << 20))    # a boot loader's size
    try:
        began = time.monotonic()
        laptops = [download(d, BIG, tmp_path / f"laptop{i}.img") for i in range(2)]
        time.sleep(0.5)
        loader = curl("-sf", "-o", str(tmp_path / "got.efi"), "-w", "%{time_total}", d.url("/tftp/loader.efi"))
        times = [float(p.communicate(timeout=60)[0]) for p in laptops]
        elapsed = time.monotonic() - began
        for i in range(2):
            assert sha256(tmp_path / f"laptop{i}.img") == sha256(images / f"{BIG}.img")
        expected = (2 * size - rate / 4) / rate      # a quarter second's burst, then the rate
        print(f"sendfile={sendfile}: 2 x {size / MB:.1f} MB at 8 MB/s in {elapsed:.2f} s "
              f"(expected {expected:.2f} s), each {times}; a 4 MiB boot file during them {loader.stdout.decode()} s")
        assert 0.8 * expected < elapsed < 2.5 * expected
        assert max(times) < 1.3 * min(times)        # turns: neither download finishes long before
        assert loader.returncode == 0 and float(loader.stdout) < 0.4   # 4 MiB at the 8 MB/s share: 0.5 s
        assert (tmp_path / "got.efi").read_bytes() == (tmp_path / "tftp" / "loader.efi").read_bytes()
        mode = "sendfile" if sendfile else "copy"
        assert f"{mode}): done" in d.log()
    finally:
        d.stop()
