"""The daemon as a sysadmin runs it: start, live changes, SIGHUP, SIGTERM, check-config."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml
from pathlib import Path

from tests.support.config import free_port, write_config
from tests.support.daemon import REPO, Daemon
from tests.support.images import build_image

IMAGE = "bookworm-2026-11-20-101500-amd64"


def test_images_and_inventory_follow_the_disk_live(tmp_path):
    config = write_config(tmp_path, inventory={"devices": [{"mac": "52:54:00:00:00:01", "hostname": "a"}]})
    staged = build_image(tmp_path / f"{IMAGE}.img")
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started")
        shutil.move(staged, tmp_path / "images" / staged.name)      # a rename, as rsync/cp -a do
        line = daemon.wait_for(f"image {IMAGE} published", timeout=10)
        assert line.startswith("info images: ") or " info images: " in line
        inventory = tmp_path / "etc" / "inventory.yaml"
        inventory.write_text(yaml.safe_dump({"devices": [
            {"mac": "52:54:00:00:00:01", "hostname": "a", "type": "laptop"},
            {"mac": "52:54:00:00:00:02", "hostname": "b"}]}))
        assert "device 52:54:00:00:00:02 (b) added" in daemon.wait_for("52:54:00:00:00:02", timeout=5)
        assert "device 52:54:00:00:00:01 (a, laptop) changed" in daemon.wait_for("52:54:00:00:00:01", timeout=5)
        inventory.write_text("devices:\n  - mac: nonsense\n")
        daemon.wait_for("not applied, keeping the previous one", timeout=5)
        assert "devices[0].mac: not a MAC address" in daemon.wait_for("devices[0].mac", timeout=2)
        (tmp_path / "images" / staged.name).unlink()
        daemon.wait_for(f"image {IMAGE} retired (removed)", timeout=10)
        assert daemon.proc.poll() is None


def test_sighup_rereads_config_and_keeps_running_on_errors(tmp_path):
    config = write_config(tmp_path)
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started")
        good = config.read_text()
        config.write_text(good.replace("settle_seconds: 0", "settle_secs: 0"))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("SIGHUP: config not applied, keeping the running one")
        assert "images.settle_secs: unknown key (did you mean 'settle_seconds'?)" in \
            daemon.wait_for("settle_secs")
        config.write_text(good)
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("SIGHUP: configuration")
        assert daemon.proc.poll() is None


def test_sigterm_stops_cleanly_within_5_seconds(tmp_path):
    config = write_config(tmp_path)
    daemon = Daemon(config)
    daemon.wait_for("bootserverd started")
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.proc.wait(timeout=5) == 0
    assert time.monotonic() - started < 5
    daemon.wait_for("bootserverd stopped", timeout=1)


def test_no_twisted_noise_at_the_default_level(tmp_path):
    config = write_config(tmp_path)
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started")
    assert not [line for line in daemon.lines if "twisted" in line or "Starting factory" in line]


def test_check_config_prints_a_summary(tmp_path):
    config = write_config(tmp_path, inventory={"devices": [{"mac": "52:54:00:00:00:01", "type": "laptop"},
                                                           {"mac": "52:54:00:00:00:02"}]},
                          tftp={"enabled": True}, images={"default": IMAGE})
    build_image(tmp_path / "images" / f"{IMAGE}.img")
    (tmp_path / "images" / "broken.img").write_bytes(b"junk")
    proc = subprocess.run([sys.executable, "-m", "bootserverd", "check-config", "-c", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"{config}: OK" in out
    assert "  tftp  on  127.0.0.1:" in out and "  dhcp  off" in out
    assert f"  {IMAGE}  " in out and " ok" in out
    assert "  broken  4 bytes  SKIPPED: not a squashfs image" in out
    assert "devices known: 2 (1 laptop, 1 untyped)" in out


def test_version():
    proc = subprocess.run([sys.executable, "-m", "bootserverd", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout.startswith("bootserverd ")


def test_repeated_sigterm_and_ctrl_c_stop_without_a_traceback(tmp_path):
    config = write_config(tmp_path)
    daemon = Daemon(config)
    daemon.wait_for("bootserverd started")
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        daemon.signal(signum)
    assert daemon.proc.wait(timeout=5) == 0
    daemon.wait_for("bootserverd stopped", timeout=2)
    assert not [line for line in daemon.lines if "Traceback" in line or "critical" in line]


def test_a_port_in_use_fails_the_start_with_a_clear_line(tmp_path):
    import socket
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    try:
        port = blocker.getsockname()[1]
        config = write_config(tmp_path, nbd={"enabled": True, "listen": f"127.0.0.1:{port}"})
        daemon = Daemon(config)
        line = daemon.wait_for("cannot start")
        assert f"{port}" in line and "Address already in use" in line
        assert daemon.proc.wait(timeout=5) == 1
    finally:
        blocker.close()


def test_root_is_refused_unless_allowed_and_dropped_to_the_configured_user(tmp_path):
    import pwd
    env_allow = os.environ.pop("BOOTSERVERD_ALLOW_ROOT")
    try:
        config = write_config(tmp_path)
        refused = Daemon(config)
        assert "refusing to run as root: set server.user" in refused.wait_for("cannot start")
        assert refused.proc.wait(timeout=5) == 1
        nobody = pwd.getpwnam("nobody")
        tmp_path = Path(tempfile.mkdtemp(prefix="bootserverd-drop-"))   # pytest's tmp is root-only
        tmp_path.chmod(0o755)
        config = write_config(tmp_path, server={"address": "127.0.0.1", "state_dir": "../state",
                                                "user": "nobody", "group": "nogroup"},
                              tftp={"enabled": True})
        with Daemon(config) as dropped:
            assert "running as nobody:nogroup" in dropped.wait_for("running as")
            dropped.wait_for("bootserverd started")
            status = Path(f"/proc/{dropped.proc.pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
            assert set(uids) == {str(nobody.pw_uid)}
            assert (tmp_path / "state").stat().st_uid == nobody.pw_uid
    finally:
        os.environ["BOOTSERVERD_ALLOW_ROOT"] = env_allow
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_leases_command_lists_the_journal(tmp_path):
    from ipaddress import IPv4Address

    from dhcp.journal import LeaseDB
    from dhcp.leases import BOUND, RELEASED, Lease
    config = write_config(tmp_path)
    db = LeaseDB(tmp_path / "state" / "leases")
    db.load()
    future = time.time() + 3600
    db.append([Lease(IPv4Address("10.0.0.57"), b"\x01a", "52:54:00:00:00:01", "class-12", future, BOUND),
               Lease(IPv4Address("10.0.0.100"), b"\x01b", "52:54:00:00:00:02", None, future, BOUND),
               Lease(IPv4Address("10.0.0.101"), b"\x01c", "52:54:00:00:00:03", "gone", future, RELEASED)])
    db.close()
    proc = subprocess.run([sys.executable, "-m", "bootserverd", "leases", "-c", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["MAC", "IP", "HOSTNAME", "EXPIRES", "(UTC)"]
    assert lines[1].split()[:3] == ["52:54:00:00:00:01", "10.0.0.57", "class-12"]
    assert lines[2].split()[:3] == ["52:54:00:00:00:02", "10.0.0.100", "-"]
    assert len(lines) == 3    # the released lease is not listed


def test_sighup_moves_the_nbd_listener_without_dropping_a_connected_client(tmp_path):
    from tests.support.nbd import load_libnbd
    libnbd = load_libnbd()
    config = write_config(tmp_path, nbd={"enabled": True})
    image = build_image(tmp_path / "images" / f"{IMAGE}.img")
    old_port = int(yaml.safe_load(config.read_text())["nbd"]["listen"].rsplit(":", 1)[1])
    with Daemon(config) as daemon:
        daemon.wait_for(f"image {IMAGE} published")
        client = libnbd.NBD()
        client.set_export_name(IMAGE)
        client.connect_tcp("127.0.0.1", str(old_port))
        first = client.pread(4096, 0)
        new = yaml.safe_load(config.read_text())
        new["nbd"]["listen"] = f"127.0.0.1:{free_port()}"
        config.write_text(yaml.safe_dump(new))
        daemon.signal(signal.SIGHUP)
        daemon.wait_for("NBD listening on 127.0.0.1:")
        daemon.wait_for("SIGHUP: configuration")
        assert client.pread(4096, 0) == first == image.read_bytes()[:4096]    # same session
        moved = libnbd.NBD()
        moved.set_export_name(IMAGE)
        moved.connect_tcp("127.0.0.1", new["nbd"]["listen"].rsplit(":", 1)[1])
        assert moved.pread(4096, 0) == first
        moved.shutdown()
        client.shutdown()


def test_selftest_tftp_client_downloads_without_tftpy(tmp_path):
    from bootserverd.tools.selftest import tftp_download_size
    config = write_config(tmp_path, tftp={"enabled": True})
    payload = os.urandom(512 * 3)          # an exact multiple of 512: the empty last block counts
    (tmp_path / "tftp" / "undionly.kpxe").write_bytes(payload)
    port = int(yaml.safe_load(config.read_text())["tftp"]["listen"].rsplit(":", 1)[1])
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started")
        assert tftp_download_size("127.0.0.1", port, "undionly.kpxe") == len(payload)
