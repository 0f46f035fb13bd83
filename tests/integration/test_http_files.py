"""HTTP downloads against the real daemon with curl: boot files, images, ranges, resume,
conditional requests, traversal refusals, the stall watchdog, sendfile and copy paths."""
import signal
import socket
import subprocess
import time

import pytest

from tests.support.http import Daemon, build_pair, curl, make_tree, mksquashfs, sha256

OLD, NEW, BIG = "ser-2026-01-01-000000-amd64", "ser-2026-02-01-000000-amd64", "big-2026-01-01-000000-amd64"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-images")
    images = work / "images"
    images.mkdir()
    build_pair(work, images, OLD, NEW)
    make_tree(work / "big", seed=9, files=64, size=256 << 10)
    mksquashfs(work / "big", images / f"{BIG}.img")
    return images


@pytest.fixture(scope="module")
def daemon(images, tmp_path_factory):
    work = tmp_path_factory.mktemp("http-daemon")
    d = Daemon(work, images, http_extra="  stall_timeout: 1.5\n", default_image=OLD)
    (work / "tftp" / "hello.txt").write_text("hello over http\n")
    (work / "tftp" / "escape").symlink_to("/etc/passwd")
    yield d
    d.stop()


def test_status(daemon, images):
    status = daemon.json("/status")
    assert {i["name"] for i in status["images"]} == {OLD, NEW, BIG}
    assert status["devices"] == 0 and status["version"]
    by_name = {i["name"]: i for i in status["images"]}
    assert by_name[OLD]["sha256"] == sha256(images / f"{OLD}.img")


def test_boot_files_are_the_ones_inside_the_image(daemon, images, tmp_path):
    for leaf, inside in (("vmlinuz", "boot/vmlinuz-6.1.0-test"), ("initrd.img", "boot/initrd.img-6.1.0-test")):
        expected = subprocess.run(["unsquashfs", "-cat", str(images / f"{OLD}.img"), inside],
                                  capture_output=True, check=True).stdout
        got = curl("-f", daemon.url(f"/boot/{OLD}/{leaf}"))
        assert got.returncode == 0, got.stderr
        assert got.stdout == expected
    assert b"not published" in curl(daemon.url("/boot/nosuch/vmlinuz")).stdout


def test_ipxe_script_points_at_http_boot(daemon):
    got = curl("-f", daemon.url("/ipxe/default.ipxe"))
    assert got.returncode == 0
    assert got.stdout.startswith(b"#!ipxe")
    assert f"/boot/{OLD}/vmlinuz".encode() in got.stdout


def test_tftp_root_over_http(daemon):
    assert curl("-f", daemon.url("/tftp/hello.txt")).stdout == b"hello over http\n"


@pytest.mark.parametrize("path", ["/tftp/../../../etc/passwd", "/tftp/..%2f..%2f..%2fetc%2fpasswd",
                                  "/tftp/escape", "/boot/..%2f..%2f..%2fetc/vmlinuz",
                                  "/images/..%2f..%2fetc%2fpasswd.img", "/images/../../etc/passwd",
                                  "/tftp/%2e%2e/%2e%2e/etc/passwd", "/ipxe/..%2f..%2fetc%2fpasswd.ipxe"])
def test_traversal_refused(daemon, path):
    got = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", daemon.url(path))
    assert got.stdout in (b"403", b"404"), (path, got.stdout)
    assert b"root:" not in curl("--path-as-is", daemon.url(path)).stdout


def test_full_download_sendfile(daemon, images, tmp_path):
    out = tmp_path / "dl.img"
    got = curl("-f", "-o", str(out), daemon.url(f"/images/{BIG}.img"))
    assert got.returncode == 0, got.stderr
    assert sha256(out) == sha256(images / f"{BIG}.img")
    daemon.wait(lambda: f"GET /images/{BIG}.img 200" in daemon.log(), 5, "transfer line")
    line = [l for l in daemon.log().splitlines() if f"GET /images/{BIG}.img 200" in l][-1]
    assert "sendfile" in line and "done" in line and f"{out.stat().st_size} bytes" in line


def test_ranges_etag_head(daemon, images):
    data = (images / f"{OLD}.img").read_bytes()
    etag = f'"{sha256(images / f"{OLD}.img")}"'
    url = daemon.url(f"/images/{OLD}.img")
    assert curl("-f", "-r", "100-199", url).stdout == data[100:200]
    assert curl("-f", "-r", "-10", url).stdout == data[-10:]
    assert curl("-f", "-r", f"{len(data) - 5}-", url).stdout == data[-5:]
    head = curl("-I", url).stdout.decode()
    assert "200" in head.splitlines()[0] and f"Content-Length: {len(data)}" in head and f"ETag: {etag}" in head
    assert "Accept-Ranges: bytes" in head
    status, headers, _ = daemon.get(f"/images/{OLD}.img", {"Range": f"bytes={len(data)}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = daemon.get(f"/images/{OLD}.img", {"Range": "bytes=0-9", "If-Range": etag})
    assert (status, body) == (206, data[:10])
    status, _, body = daemon.get(f"/images/{OLD}.img", {"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert status == 200 and body == data
    status, _, body = daemon.get(f"/images/{OLD}.img", {"If-None-Match": etag})
    assert (status, body) == (304, b"")


def test_resume_after_killed_transfer(daemon, images, tmp_path):
    out = tmp_path / "partial.img"
    url = daemon.url(f"/images/{BIG}.img")
    slow = subprocess.Popen(["curl", "-sS", "--limit-rate", "2M", "-o", str(out), url])
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and (not out.exists() or out.stat().st_size < 1 << 20):
            time.sleep(0.05)
    finally:
        slow.send_signal(signal.SIGKILL)
        slow.wait(5)
    size = out.stat().st_size
    assert 0 < size < (images / f"{BIG}.img").stat().st_size
    got = curl("-f", "-C", "-", "-o", str(out), url)
    assert got.returncode == 0, got.stderr
    assert sha256(out) == sha256(images / f"{BIG}.img")
    assert f"range {size}-" in daemon.log()


def test_listing(daemon, images):
    listing = daemon.json("/images/")["images"]
    assert [i["name"] for i in listing] == sorted([OLD, NEW, BIG])
    assert all(i["release"] and i["size"] > 0 and len(i["sha256"]) == 64 for i in listing)


def test_unknown_and_bad_requests(daemon):
    assert daemon.get("/images/nosuch.img")[0] == 404
    assert daemon.get("/nope")[0] == 404
    assert daemon.get(f"/images/{OLD}.img", method="DELETE")[0] == 405


def test_stalled_client_is_dropped(daemon, images):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", daemon.port))
    try:
        sock.sendall(f"GET /images/{BIG}.img HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        daemon.wait(lambda: "sendfile): stalled" in daemon.log(), 10, "the stall watchdog")
    finally:
        sock.close()
    assert daemon.get("/status")[0] == 200


def test_copy_path_without_sendfile(images, tmp_path):
    d = Daemon(tmp_path, images, http_extra="  sendfile: false\n")
    try:
        out = tmp_path / "copy.img"
        assert curl("-f", "-o", str(out), d.url(f"/images/{BIG}.img")).returncode == 0
        assert sha256(out) == sha256(images / f"{BIG}.img")
        data = (images / f"{BIG}.img").read_bytes()
        assert curl("-f", "-r", "5000000-5000099", d.url(f"/images/{BIG}.img")).stdout == data[5000000:5000100]
        d.wait(lambda: "copy): done" in d.log(), 5, "copy transfer line")
        assert "sendfile" not in d.log()
    finally:
        d.stop()


def test_keepalive_and_pipelining_after_sendfile(daemon, images, tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    got = curl("-f", "-o", str(a), d_url := daemon.url(f"/images/{BIG}.img"), "-o", str(b), d_url,
               "-w", "%{num_connects}\n")
    assert got.returncode == 0 and got.stdout.split() == [b"1", b"0"]      # the second reused the connection
    assert sha256(a) == sha256(b) == sha256(images / f"{BIG}.img")
    # two requests written at once on one socket: both answers complete and in order
    data = (images / f"{OLD}.img").read_bytes()
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall((f"GET /images/{OLD}.img HTTP/1.1\r\nHost: x\r\n\r\n"
                      f"GET /images/{OLD}.img HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n").encode())
        received = bytearray()
        while chunk := sock.recv(1 << 20):
            received += chunk
    first_head, _, rest = bytes(received).partition(b"\r\n\r\n")
    assert first_head.startswith(b"HTTP/1.1 200") and rest[:len(data)] == data
    second_head, _, body = rest[len(data):].partition(b"\r\n\r\n")
    assert second_head.startswith(b"HTTP/1.1 206") and body == data[:10]


def test_http10_client(daemon, images):
    data = (images / f"{OLD}.img").read_bytes()
    got = curl("-f", "-0", daemon.url(f"/images/{OLD}.img"))
    assert got.returncode == 0 and got.stdout == data
