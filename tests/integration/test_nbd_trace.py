"""The NBD trace recorder in the real daemon: real clients' sessions (libnbd, nbdcopy) recorded
as the config says — the next N sessions of an image, a device by its IP — bounded, written
under the state dir, kept to keep_files, re-armed by SIGHUP, and shown by `bootserverd trace`."""

import os
import signal
import socket
import subprocess
import sys

import yaml

from tests.support.config import write_config
from tests.support.daemon import REPO, Daemon
from tests.support.images import build_image
from tests.support.nbd import PEER_CWD, load_libnbd, peer_env


def cli(config, *args):
    return subprocess.run([sys.executable, "-m", "bootserverd", *args, "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def connect_from(libnbd, source: str, port: int, export: str):
    """A libnbd session whose TCP connection comes from ``source`` (a 127.x address)."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.connect(("127.0.0.1", port))
    h = libnbd.NBD()
    h.set_export_name(export)
    h.connect_socket(sock.detach())
    return h


def test_sessions_are_recorded_as_configured_and_listed_by_the_cli(tmp_path):
    libnbd = load_libnbd()
    config = write_config(tmp_path, nbd={"enabled": True, "trace": {
        "images": [{"image": "alpha", "sessions": 1}], "max_requests": 40, "keep_files": 2}})
    image = build_image(tmp_path / "images" / "alpha.img", extra={"/data": os.urandom(7 << 19)})
    data = image.read_bytes()
    size = len(data)
    assert size >= 49 * 65536
    traces = tmp_path / "state" / "nbd-traces"
    settings = yaml.safe_load(config.read_text())
    port = int(settings["nbd"]["listen"].rsplit(":", 1)[1])
    assert cli(config, "trace", "list").stdout.startswith("no NBD traces")
    with Daemon(config) as daemon:
        daemon.wait_for("image alpha published")

        # The image's next session: a kernel-like reader, exactly its reads in order, timed.
        h = connect_from(libnbd, "127.0.0.1", port, "alpha")
        reads = [(0, 4096), (1 << 20, 131072), (8192, 512), (size - 4096, 4096)]
        for offset, length in reads:
            assert h.pread(length, offset) == data[offset:offset + length]
        h.shutdown()
        line = daemon.wait_for("NBD trace of 127.0.0.1:")
        assert "on export 'alpha' written" in line and "(5 requests; session closed)" in line        # 4 reads + DISC
        (first,) = sorted(traces.iterdir())
        lines = first.read_text().splitlines()
        assert lines[0] == "# bootserverd nbd trace 1" and "# image: alpha" in lines
        assert "# why: image alpha (1 of 1)" in lines
        rows = [ln.split() for ln in lines if not ln.startswith("#")]
        assert [(r[1], int(r[2]), int(r[3])) for r in rows] == [("READ", o, n) for o, n in reads] + [("DISC", 0, 0)]
        times = [float(r[0]) for r in rows]
        assert times == sorted(times) and 0 < times[0] < 10

        # Used up: the next session of the image (nbdcopy, the whole image) is not recorded.
        out = tmp_path / "copy.img"
        subprocess.run(["nbdcopy", "--connections=1", f"nbd://127.0.0.1:{port}/alpha", str(out)],
                       env=peer_env(), cwd=PEER_CWD, check=True, timeout=60)
        assert out.read_bytes() == data
        daemon.wait_for("NBD 127.0.0.1:")                    # its session line
        assert len(list(traces.iterdir())) == 1

        # SIGHUP: a device by IP, recorded every time, bounded by max_requests.
        settings["nbd"]["trace"] = {"devices": ["127.0.0.7"], "max_requests": 40, "keep_files": 2}
        config.write_text(yaml.safe_dump(settings))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("SIGHUP: configuration")
        for _ in range(2):
            subprocess.run(["nbdcopy", "--connections=1", "--request-size=65536",
                            f"nbd://127.0.0.1:{port}/alpha", str(out)], env=peer_env(), cwd=PEER_CWD,
                           check=True, timeout=60)           # from 127.0.0.1: not this device
            h = connect_from(libnbd, "127.0.0.7", port, "alpha")
            for offset in range(0, 49 * 65536, 65536):       # 49 reads + DISC: 10 beyond max_requests
                assert h.pread(65536, offset) == data[offset:offset + 65536]
            h.shutdown()
            line = daemon.wait_for("NBD trace of 127.0.0.7:")
            assert "(40 requests, 10 more not recorded; session closed)" in line
        kept = sorted(traces.iterdir())
        assert len(kept) == 2 and all("-127.0.0.7-alpha" in p.name for p in kept)   # keep_files: 2

    listed = cli(config, "trace", "list")
    assert listed.returncode == 0, listed.stderr
    body = listed.stdout.splitlines()[1:]
    assert [ln.split()[0] for ln in body] == [p.name for p in kept]
    assert all(ln.split()[1:4] == ["alpha", ln.split()[2], "40"] for ln in body)
    shown = cli(config, "trace", "show", kept[-1].name, "--summary")
    assert shown.returncode == 0, shown.stderr
    summary = dict(ln.split(None, 1) for ln in shown.stdout.splitlines())
    assert (summary["image"], summary["reads"], summary["read_bytes"], summary["not_recorded"]) == \
        ("alpha", "40", str(40 * 65536), "10")
    assert summary["client"].startswith("127.0.0.7:")
    full = cli(config, "trace", "show", kept[-1].name[:20])      # a unique prefix is enough
    assert full.returncode == 0 and full.stdout == kept[-1].read_text()
    assert cli(config, "trace", "show", "nonesuch").returncode == 1


def test_a_session_that_stays_open_is_written_after_max_seconds_and_at_stop(tmp_path):
    """A thin client stays connected all day: its boot's trace is written after max_seconds, and a
    daemon stop writes the traces of sessions still open."""
    libnbd = load_libnbd()
    config = write_config(tmp_path, nbd={"enabled": True, "trace": {
        "devices": ["127.0.0.8", "127.0.0.9"], "max_seconds": 1.5}})
    image = build_image(tmp_path / "images" / "alpha.img")
    data = image.read_bytes()
    port = int(yaml.safe_load(config.read_text())["nbd"]["listen"].rsplit(":", 1)[1])
    traces = tmp_path / "state" / "nbd-traces"
    with Daemon(config) as daemon:
        daemon.wait_for("image alpha published")
        h = connect_from(libnbd, "127.0.0.8", port, "alpha")
        assert h.pread(4096, 0) == data[:4096]
        line = daemon.wait_for("NBD trace of 127.0.0.8:", timeout=10)
        assert "(1 requests; still open after max_seconds 1.5)" in line
        assert h.pread(4096, 4096) == data[4096:8192]        # served on, no longer recorded
        other = connect_from(libnbd, "127.0.0.9", port, "alpha")
        assert other.pread(512, 0) == data[:512]
        daemon.wait_for("connected to export 'alpha'")
        assert daemon.stop() == 0
    files = {p.name.split("-")[1]: p.read_text() for p in traces.iterdir()}
    assert set(files) == {"127.0.0.8", "127.0.0.9"}, files
    assert "# ended: still open after max_seconds 1.5" in files["127.0.0.8"]
    assert [ln for ln in files["127.0.0.8"].splitlines() if not ln.startswith("#")][0].endswith(" READ 0 4096")
    assert "# ended: daemon stopped while the session was open" in files["127.0.0.9"]
    assert " READ 0 512\n" in files["127.0.0.9"]
