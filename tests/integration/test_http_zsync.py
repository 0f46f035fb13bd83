"""/images/<name>.img.zsync and multi-range requests against real clients: the control file is
made by zsyncmake in the diff workers (503 + Retry-After, then cached with its sha256 as ETag);
the real `zsync -i old.img` client rebuilds the new image byte for byte fetching a fraction of
it through multipart/byteranges answers, which curl's multi-range requests also get right."""
import email.parser
import hashlib
import json
import re
import subprocess
import time

import pytest

from tests.support.http import Daemon, build_pair, curl, sha256

OLD, NEW = "zs-2026-01-01-000000-amd64", "zs-2026-02-01-000000-amd64"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-zsync")
    images = work / "images"
    images.mkdir()
    build_pair(work, images, OLD, NEW, files=80)
    d = Daemon(work / "d", images)
    yield d, images
    d.stop()


def control_file(d, name: str, timeout: float = 30):
    end = time.monotonic() + timeout
    seen = False
    while time.monotonic() < end:
        status, headers, body = d.get(f"/images/{name}.img.zsync")
        if status != 503:
            return status, headers, body, seen
        assert int(headers["Retry-After"]) >= 1
        seen = True
        time.sleep(0.1)
    raise AssertionError(d.log())


def test_control_file_made_on_demand_and_cached(setup):
    d, images = setup
    status, headers, body, seen = control_file(d, NEW)
    assert status == 200 and seen
    assert headers["ETag"] == f'"{hashlib.sha256(body).hexdigest()}"'
    assert headers["Content-Type"] == "application/x-zsync"
    assert body.startswith(b"zsync: ") and f"URL: {NEW}.img".encode() in body
    assert f"Length: {(images / f'{NEW}.img').stat().st_size}".encode() in body
    cached = list((d.state / "diffs").glob("*.zsync"))
    assert len(cached) == 1 and json.loads((cached[0].parent / (cached[0].name + ".json")).read_text())["nice"] >= 10
    assert d.log().count(f"zsync control file of {NEW}: building") == 1
    assert control_file(d, NEW)[2] == body                       # from the cache, not made again
    assert d.log().count(f"zsync control file of {NEW}: building") == 1


def test_unknown_images_have_no_control_file(setup):
    d, _ = setup
    for path in (f"/images/nosuch.img.zsync", "/images/..%2f..%2fetc%2fpasswd.img.zsync"):
        got = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", d.url(path))
        assert got.stdout == b"404", path


def test_zsync_client_rebuilds_the_new_image(setup, tmp_path):
    d, images = setup
    control_file(d, NEW)
    out = tmp_path / "new.img"
    got = subprocess.run(["zsync", "-i", str(images / f"{OLD}.img"), "-o", str(out),
                          d.url(f"/images/{NEW}.img.zsync")], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert got.returncode == 0, got.stderr
    assert sha256(out) == sha256(images / f"{NEW}.img")
    fetched = int(re.search(r"fetched (\d+)", got.stdout + got.stderr)[1])
    size = out.stat().st_size
    assert fetched < size // 5, (fetched, size)
    assert re.search(rf"GET /images/{NEW}.img 206 \d+ ranges of {size}: \d+ bytes .*: done", d.log())


def test_curl_multi_range_is_multipart(setup, tmp_path):
    d, images = setup
    data = (images / f"{NEW}.img").read_bytes()
    head = tmp_path / "h"
    got = curl("-f", "-D", str(head), "-r", "0-9,100-199,5000-6000,150-300", d.url(f"/images/{NEW}.img"))
    assert got.returncode == 0, got.stderr
    headers = head.read_text()
    assert "206" in headers.splitlines()[0]
    ctype = re.search(r"(?im)^content-type: (.*)$", headers)[1].strip()
    assert ctype.startswith("multipart/byteranges; boundary=")
    message = email.parser.BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + got.stdout)
    parts = [(p["Content-Range"], p.get_payload(decode=True)) for p in message.get_payload()]
    n = len(data)
    assert parts == [(f"bytes 0-9/{n}", data[:10]), (f"bytes 100-300/{n}", data[100:301]),
                     (f"bytes 5000-6000/{n}", data[5000:6001])]
    assert int(re.search(r"(?im)^content-length: (\d+)", headers)[1]) == len(got.stdout)
    # HEAD: the same headers, no body; too many ranges: the whole file
    h = curl("-I", "-r", "0-9,100-199", d.url(f"/images/{NEW}.img"))
    assert b"206" in h.stdout.splitlines()[0] and b"multipart/byteranges" in h.stdout
    many = ",".join(f"{i * 100}-{i * 100 + 9}" for i in range(65))
    whole = curl("-f", "-r", many, "-o", str(tmp_path / "whole"), "-w", "%{http_code}", d.url(f"/images/{NEW}.img"))
    assert whole.stdout == b"200" and (tmp_path / "whole").read_bytes() == data
