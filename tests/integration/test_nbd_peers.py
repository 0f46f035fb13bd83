"""Our NBD server against real clients: nbdinfo, nbdcopy, qemu-img, qemu-io, nbdsh, libnbd."""

import json
import os
import subprocess

import pytest

from tests.support.nbd import PEER_CWD, Server, load_libnbd, peer_env, sha256

SIZES = {"alpha": 8 << 20, "beta": 3 << 20, "odd": 1000123}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbd-images")
    for name, size in SIZES.items():
        (d / f"{name}.img").write_bytes(os.urandom(size))
    return d


@pytest.fixture(scope="module")
def server(images, tmp_path_factory):
    s = Server(images, tmp_path_factory.mktemp("nbd-log") / "server.log")
    yield s
    s.stop()


def run(*cmd, **kw):
    return subprocess.run(cmd, env=peer_env(), cwd=PEER_CWD, capture_output=True, text=True,
                          timeout=60, **kw)


def test_nbdinfo_list_shows_every_export(server):
    r = run("nbdinfo", "--list", server.uri())
    assert r.returncode == 0, r.stderr
    for name, size in SIZES.items():
        assert f'export="{name}"' in r.stdout
        assert f"export-size: {size}" in r.stdout
    assert "is_read_only: true" in r.stdout and "can_multi_conn: true" in r.stdout


def test_nbdinfo_json_lists_sizes_and_flags(server):
    r = run("nbdinfo", "--json", "--list", server.uri())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    got = {e["export-name"]: e for e in doc["exports"]}
    assert {n: e["export-size"] for n, e in got.items()} == SIZES
    e = got["alpha"]
    assert e["is_read_only"] and e["can_cache"] and e["can_flush"] and e["can_multi_conn"]
    assert not e["can_trim"] and not e["can_zero"]
    assert e["block_size_maximum"] == 32 << 20
    assert doc["structured"] is True


@pytest.mark.parametrize("name", sorted(SIZES))
def test_nbdcopy_export_has_the_files_sha256(server, images, name, tmp_path):
    out = tmp_path / "copy"
    r = run("nbdcopy", server.uri(name), str(out))
    assert r.returncode == 0, r.stderr
    assert sha256(out) == sha256(images / f"{name}.img")


def test_nbdcopy_single_connection_to_stdout(server, images, tmp_path):
    out = tmp_path / "copy"
    with open(out, "wb") as f:
        r = subprocess.run(["nbdcopy", "--connections=1", server.uri("alpha"), "-"],
                           env=peer_env(), cwd=PEER_CWD, stdout=f, stderr=subprocess.PIPE, timeout=60)
    assert r.returncode == 0, r.stderr
    assert sha256(out) == sha256(images / "alpha.img")


@pytest.mark.parametrize("name", ["alpha", "beta"])
def test_qemu_img_convert_has_the_files_sha256(server, images, name, tmp_path):
    out = tmp_path / "out.raw"
    r = run("qemu-img", "convert", "-f", "raw", "-O", "raw", server.uri(name), str(out))
    assert r.returncode == 0, r.stderr
    assert sha256(out) == sha256(images / f"{name}.img")


def test_qemu_img_pads_an_unaligned_export_with_zeroes_only(server, images, tmp_path):
    out = tmp_path / "out.raw"
    r = run("qemu-img", "convert", "-f", "raw", "-O", "raw", server.uri("odd"), str(out))
    assert r.returncode == 0, r.stderr
    data, orig = out.read_bytes(), (images / "odd.img").read_bytes()
    assert data[:len(orig)] == orig and not data[len(orig):].strip(b"\0")


def test_qemu_io_cannot_write(server):
    r = run("qemu-io", "-f", "raw", "-c", "write 0 512", server.uri("alpha"))
    assert r.returncode != 0
    assert "Permission denied" in r.stderr or "read-only" in r.stderr.lower()


def test_qemu_io_reads_with_pattern_check(server, images):
    # qemu-io's own read path; verify one 4 KiB block against the file.
    r = run("qemu-io", "-r", "-f", "raw", "-c", "read -v 4096 16", server.uri("alpha"))
    assert r.returncode == 0, r.stderr
    first = (images / "alpha.img").read_bytes()[4096:4112]
    assert first.hex()[:8] in r.stdout.replace(" ", "")


def test_nbdsh_write_trim_zero_are_eperm_from_the_server(server):
    script = (
        "h.set_strict_mode(0)\n"   # skip libnbd's own read-only check: ask the server
        "for op in (lambda: h.pwrite(b'x' * 512, 0), lambda: h.trim(512, 0), "
        "lambda: h.zero(512, 0)):\n"
        "    try:\n"
        "        op()\n"
        "        print('NOERROR')\n"
        "    except nbd.Error as e:\n"
        "        print('errno', e.errno)\n"
    )
    r = run("nbdsh", "-u", server.uri("alpha"), "-c", script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["errno EPERM"] * 3, r.stdout


def test_nbdsh_structured_replies_and_base_allocation(server):
    script = (
        "assert h.get_structured_replies_negotiated()\n"
        "assert h.can_meta_context('base:allocation')\n"
        "got = []\n"
        "h.block_status(65536, 4096, lambda ctx, off, ents, err: got.append((ctx, off, ents)))\n"
        "print(got)\n"
        "print(h.pread(4, 0).hex())\n"
        "h.set_strict_mode(0)\n"
        "try:\n"
        "    h.block_status(2, (8 << 20) - 1, lambda *a: 0)\n"
        "except nbd.Error as e:\n"
        "    print('errno', e.errno)\n"
    )
    r = run("nbdsh", "--base-allocation", "-u", server.uri("alpha"), "-c", script)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "[('base:allocation', 4096, [65536, 0])]"
    assert lines[2] == "errno EINVAL"


def test_libnbd_bounds_at_the_last_byte(server, images):
    libnbd = load_libnbd()
    data = (images / "odd.img").read_bytes()
    h = libnbd.NBD()
    h.connect_uri(server.uri("odd"))
    try:
        assert h.get_size() == len(data)
        assert h.pread(1, len(data) - 1) == data[-1:]
        assert h.pread(4096, len(data) - 4096) == data[-4096:]
        h.set_strict_mode(0)          # let the server, not libnbd, judge the bounds
        for count, offset in ((2, len(data) - 1), (1, len(data)), ((32 << 20) + 1, 0)):
            with pytest.raises(libnbd.Error) as e:
                h.pread(count, offset)
            assert e.value.errno == "EINVAL"
        assert h.pread(16, 0) == data[:16]      # the connection survives the errors
        h.flush()
        h.cache(65536, 0)
    finally:
        h.shutdown()
        del h


def test_libnbd_simple_replies_without_structured(server, images):
    libnbd = load_libnbd()
    data = (images / "beta.img").read_bytes()
    h = libnbd.NBD()
    h.set_request_structured_replies(False)
    h.connect_uri(server.uri("beta"))
    try:
        assert not h.get_structured_replies_negotiated()
        assert h.pread(1 << 20, 12345) == data[12345:12345 + (1 << 20)]
        h.set_strict_mode(0)
        with pytest.raises(libnbd.Error) as e:
            h.pread(2, len(data) - 1)
        assert e.value.errno == "EINVAL"
        assert h.pread(3, 0) == data[:3]
    finally:
        h.shutdown()
        del h


def test_unknown_export_is_refused_and_the_server_lives_on(server):
    r = run("nbdinfo", server.uri("nope"))
    assert r.returncode != 0
    r = run("nbdinfo", "--size", server.uri("beta"))
    assert r.stdout.strip() == str(SIZES["beta"])


def test_connect_and_disconnect_are_logged(server):
    run("nbdinfo", "--size", server.uri("alpha"))
    text = server.wait_log("disconnected")
    assert "connected to export 'alpha': 8388608 bytes, structured replies" in text
    assert "client sent NBD_CMD_DISC" in text
