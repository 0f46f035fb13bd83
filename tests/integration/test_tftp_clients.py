"""The TFTP service against real clients on loopback: curl, atftp, tftp-hpa, busybox, tftpy."""
import os
import shutil
import subprocess

import pytest
import tftpy

from tests.support.files import sha256 as sha
from tests.support.tftp import Server

CLIENT_TIMEOUT = 60


def run(cmd, **kw):
    for tool in ("curl", "atftp", "tftp", "busybox"):
        if cmd[0] == tool:
            assert shutil.which(tool), f"{tool} missing: install deps/apt/tftp.txt"
    return subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT, **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    base = tmp_path_factory.mktemp("tftp")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    rnd = os.urandom(3 * 1024 * 1024 + 77)
    (root / "mid.bin").write_bytes(rnd)
    (root / "exact.bin").write_bytes(rnd[:1468 * 20])          # ends with an empty block
    (root / "empty.bin").write_bytes(b"")
    (root / "sub" / "boot.cfg").write_text("DEFAULT linux\r\nLABEL x\n\rkernel vmlinuz\n")
    # Sparse and > 96 MiB so 1468-byte blocks roll past 65535; marks where it matters.
    big = root / "big.img"
    with open(big, "wb") as f:
        f.truncate(101 * 1024 * 1024 + 1234)
        for off in (0, 65535 * 1468 - 10, 65536 * 1468 + 5, 101 * 1024 * 1024):
            f.seek(off)
            f.write(os.urandom(1000))
    return root, base


@pytest.fixture(scope="module")
def server(files):
    root, _ = files
    s = Server(root, "--max-blksize", "65464", "--max-per-client", "64")
    yield s
    s.stop()


def url(server, name):
    return f"tftp://127.0.0.1:{server.port}/{name}"


@pytest.mark.parametrize("blksize", [1468, 8192])
def test_curl_blksize_and_tsize(server, files, tmp_path, blksize):
    root, _ = files
    out = tmp_path / "out"
    r = run(["curl", "-sS", "--tftp-blksize", str(blksize), "-o", str(out),
             url(server, "mid.bin")])
    assert r.returncode == 0, r.stderr
    assert sha(out) == sha(root / "mid.bin")
    log = server.wait_log(f"blksize={blksize} windowsize=1")
    assert f"tsize={(root / 'mid.bin').stat().st_size}" in log   # curl asks tsize 0


def test_curl_edge_sizes(server, files, tmp_path):
    root, _ = files
    for name in ("exact.bin", "empty.bin"):
        out = tmp_path / name
        r = run(["curl", "-sS", "--tftp-blksize", "1468", "-o", str(out), url(server, name)])
        assert r.returncode == 0, r.stderr
        assert out.read_bytes() == (root / name).read_bytes()


def test_atftp_windowsize_16(server, files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    r = run(["atftp", "--option", "windowsize 16", "--option", "blksize 1468", "-g",
             "-r", "mid.bin", "-l", str(out), "127.0.0.1", str(server.port)])
    assert r.returncode == 0, r.stderr
    assert sha(out) == sha(root / "mid.bin")
    server.wait_log("blksize=1468 windowsize=16")


def test_rollover_past_block_65535(server, files, tmp_path):
    root, _ = files
    out = tmp_path / "big"
    r = run(["atftp", "--option", "windowsize 16", "--option", "blksize 1468", "-g",
             "-r", "big.img", "-l", str(out), "127.0.0.1", str(server.port)])
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == (root / "big.img").stat().st_size > 65535 * 1468
    assert sha(out) == sha(root / "big.img")


def test_busybox_tftp(server, files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    r = run(["busybox", "tftp", "-b", "1468", "-g", "-r", "mid.bin", "-l", str(out),
             "127.0.0.1", str(server.port)])
    assert r.returncode == 0, r.stderr
    assert sha(out) == sha(root / "mid.bin")


def test_tftp_hpa_octet_and_netascii(server, files, tmp_path):
    """tftp-hpa negotiates nothing: plain RFC 1350. In netascii mode it converts CR LF back,
    so an exact round trip proves our conversion."""
    root, _ = files
    out, txt = tmp_path / "out", tmp_path / "boot.cfg"
    r = run(["tftp", "127.0.0.1", str(server.port), "-m", "binary", "-c", "get", "mid.bin",
             str(out)])
    assert r.returncode == 0 and sha(out) == sha(root / "mid.bin"), r.stdout + r.stderr
    r = run(["tftp", "127.0.0.1", str(server.port), "-m", "ascii", "-c", "get",
             "sub/boot.cfg", str(txt)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert txt.read_bytes() == (root / "sub" / "boot.cfg").read_bytes()
    server.wait_log("'sub/boot.cfg' (netascii)")


DONE = 'bootserverd_transfers_total{outcome="done",service="tftp"}'
SENT = 'bootserverd_sent_bytes_total{service="tftp"}'


def test_tftpy_client_and_the_metrics_count_it(server, files, tmp_path):
    root, _ = files
    out = tmp_path / "out"
    before = server.metrics()
    c = tftpy.TftpClient("127.0.0.1", server.port, options={"blksize": 1468, "tsize": 0})
    c.download("mid.bin", str(out), timeout=5)
    assert sha(out) == sha(root / "mid.bin")
    size = (root / "mid.bin").stat().st_size
    server.wait_metric(DONE, before.get(DONE, 0) + 1)
    server.wait_metric(SENT, before[SENT] + size)


def test_backslash_and_leading_slash(server, files, tmp_path):
    out = tmp_path / "o"
    r = run(["curl", "-sS", "-o", str(out), url(server, "/sub\\boot.cfg")])
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == (files[0] / "sub" / "boot.cfg").read_bytes()


def test_32_concurrent_transfers(server, files, tmp_path):
    root, _ = files
    want = sha(root / "mid.bin")
    procs = []
    for i in range(32):
        procs.append(subprocess.Popen(
            ["curl", "-sS", "--tftp-blksize", "1468", "-o", str(tmp_path / f"c{i}"),
             url(server, "mid.bin")], stderr=subprocess.PIPE, text=True))
    try:
        for p in procs:
            assert p.wait(CLIENT_TIMEOUT) == 0, p.stderr.read()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert all(sha(tmp_path / f"c{i}") == want for i in range(32))


def test_not_found_is_error_1_logged_and_counted(server, tmp_path):
    refused = 'bootserverd_transfers_total{outcome="refused",service="tftp"}'
    before = server.metrics().get(refused, 0)
    r = run(["curl", "-sS", "-o", str(tmp_path / "x"), url(server, "nope.bin")])
    assert r.returncode == 68, r.stderr     # CURLE_TFTP_NOTFOUND: our error 1
    server.wait_log("'nope.bin' (octet)")
    assert server.metrics()[refused] == before + 1


def test_a_repeated_refusal_is_one_line_with_a_count(server, tmp_path):
    for _ in range(3):
        r = run(["curl", "-sS", "-o", str(tmp_path / "x"), url(server, "again.bin")])
        assert r.returncode == 68, r.stderr
    run(["curl", "-sS", "-o", str(tmp_path / "x"), url(server, "after.bin")])   # the server
    server.wait_log("'after.bin' (octet)")                                        # is past them
    assert server.log().count("'again.bin' (octet)") == 1


def test_write_request_refused_and_nothing_written(server, files, tmp_path):
    src = tmp_path / "up"
    src.write_bytes(b"x" * 100)
    r = run(["atftp", "-p", "-l", str(src), "-r", "uploaded.bin", "127.0.0.1",
             str(server.port)])
    assert r.returncode != 0
    assert "read-only" in (r.stdout + r.stderr)
    assert not (files[0] / "uploaded.bin").exists()


def test_log_line_has_what_a_sysadmin_needs(server, tmp_path):
    run(["curl", "-sS", "--tftp-blksize", "1468", "-o", str(tmp_path / "o"),
         url(server, "exact.bin")])
    line = [l for l in server.wait_log("'exact.bin'").splitlines() if "'exact.bin'" in l][-1]
    for part in ("127.0.0.1:", "29360 bytes in", "MB/s", "blksize=1468", "windowsize=1",
                 "retransmissions=0", ": ok"):
        assert part in line, line
