"""The Debian packages: built with dpkg-buildpackage, lintian-clean (no errors, no warnings),
each installed with apt into its own clean Debian 12 root made by debootstrap and run there:
the server (``bootserverd``, the package's own autopkgtest) and what goes into the OS image
(``bootserverd-client``: the updater, its two units, the initramfs-tools pieces).

The minbase root is cached between runs (tests/support/debian.py); each run unpacks a fresh
copy, so nothing from an earlier install is left in it.
"""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.support.debian import minbase_tarball
from tests.support.images import build_image
from tests.support.nbdreader import PipelinedReader
from tests.support.systemd_root import SystemdRoot

IMAGE = "demo-2026-01-01-000000-amd64"

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> dict[str, Path]:
    """Both binary packages, built in a directory of this run's own (not build/deb: another
    engineer's `make deb` would remove it under us). Lintian: no errors and no warnings."""
    out = tmp_path_factory.mktemp("deb")
    proc = subprocess.run([str(REPO / "tools" / "build-deb"), str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lintian = (out / "lintian.log").read_text()
    assert not [line for line in lintian.splitlines() if line[:2] in ("E:", "W:")], lintian
    server, client = (Path(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert server.name.startswith("bootserverd_") and client.name.startswith("bootserverd-client_"), proc.stdout
    return {"bootserverd": server, "bootserverd-client": client}


@pytest.fixture(scope="module")
def deb(debs) -> Path:
    return debs["bootserverd"]


@pytest.fixture
def chroot(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-xf", str(minbase_tarball()), "-C", str(root)], check=True)
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")   # start no services
    (root / "usr/sbin/policy-rc.d").chmod(0o755)
    mounted = []
    try:
        for kind, target in (("proc", "proc"), ("devtmpfs", "dev")):
            subprocess.run(["mount", "-t", kind, kind, str(root / target)], check=True)
            mounted.append(root / target)
        yield root
    finally:
        for target in reversed(mounted):
            subprocess.run(["umount", "-l", str(target)], check=False)


def in_root(root: Path, script: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), "/bin/sh", "-c", script], capture_output=True, text=True,
                          timeout=timeout, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                                                "DEBIAN_FRONTEND": "noninteractive"})


def test_package_installs_with_apt_into_clean_debian_and_serves(deb, chroot):
    shutil.copy(deb, chroot / "tmp" / deb.name)
    installed = in_root(chroot, f"apt-get -o DPkg::Lock::Timeout=600 update -qq && "
                                f"apt-get install -y -qq --no-install-recommends /tmp/{deb.name} curl")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert in_root(chroot, "command -v pip pip3 || true").stdout.strip() == ""   # Depends were enough
    # the updater is bootserverd-client's; the server keeps the stdlib module it imports
    files = in_root(chroot, "dpkg -L bootserverd").stdout.splitlines()
    assert "/usr/share/bootserverd/bootserverd_client/fsutil.py" in files, files
    assert not [f for f in files if "image-update" in f or f.endswith("/updater.py")], files
    assert "/usr/share/bootserverd/services/http/__init__.py" in files, files
    assert "/usr/share/bootserverd/grafana/bootserverd.json" in files, files   # docs/monitoring.md
    state = in_root(chroot, "stat -c '%U %a' /var/lib/bootserverd; getent passwd bootserverd")
    assert state.stdout.splitlines()[0] == "bootserverd 750", state.stdout
    check = in_root(chroot, "bootserverd check-config --config /etc/bootserverd/bootserverd.yaml")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "tftp  on  0.0.0.0:69" in check.stdout and "dhcp  off" in check.stdout
    shutil.copy(REPO / "debian" / "tests" / "smoke", chroot / "tmp" / "smoke")
    smoke = in_root(chroot, "sh -eu /tmp/smoke", timeout=120)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    assert "running as bootserverd:bootserverd" in smoke.stdout + smoke.stderr
    purged = in_root(chroot, f"apt-get purge -y -qq bootserverd && test ! -e /var/lib/bootserverd")
    assert purged.returncode == 0, purged.stdout[-2000:] + purged.stderr[-2000:]


CLIENT_FILES = (
    "/usr/bin/bootserverd-image-update",
    "/usr/share/bootserverd-client/bootserverd_client/updater.py",
    "/usr/share/bootserverd-client/bootserverd_client/fsutil.py",
    "/lib/systemd/system/bootserverd-image-boot-check.service",
    "/lib/systemd/system/bootserverd-image-mark-good.service",
    "/usr/share/initramfs-tools/hooks/bootserverd-client",
    "/usr/share/initramfs-tools/scripts/init-premount/bootserverd-link",
    "/usr/share/initramfs-tools/scripts/local-bottom/bootserverd-overlay",
)
WANTS = "/etc/systemd/system/multi-user.target.wants"


def test_client_package_installs_alone_with_its_units_enabled_and_the_updater_runs(debs, chroot):
    deb = debs["bootserverd-client"]
    shutil.copy(deb, chroot / "tmp" / deb.name)
    installed = in_root(chroot, f"apt-get -o DPkg::Lock::Timeout=600 update -qq && "
                                f"apt-get install -y -qq --no-install-recommends /tmp/{deb.name}")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # the image side: no server, no pip; the updater's tools (rdiff) and initramfs-tools came along
    assert in_root(chroot, "dpkg -s bootserverd").returncode != 0
    assert in_root(chroot, "command -v pip pip3 || true").stdout.strip() == ""
    assert in_root(chroot, "command -v rdiff && command -v update-initramfs").returncode == 0
    files = in_root(chroot, "dpkg -L bootserverd-client").stdout.splitlines()
    assert set(CLIENT_FILES) <= set(files), files
    scripts = in_root(chroot, "test -x /usr/share/initramfs-tools/hooks/bootserverd-client && "
                              "test -x /usr/share/initramfs-tools/scripts/init-premount/bootserverd-link && "
                              "test -x /usr/share/initramfs-tools/scripts/local-bottom/bootserverd-overlay")
    assert scripts.returncode == 0
    # the initrd is rebuilt whenever the package comes, changes or goes (dh_installinitramfs)
    triggers = in_root(chroot, "cat /var/lib/dpkg/info/bootserverd-client.triggers").stdout
    assert "activate-noawait update-initramfs" in triggers, triggers
    # both units enabled by the package (not started: policy-rc.d, and --no-start anyway)
    enabled = in_root(chroot, f"readlink {WANTS}/bootserverd-image-boot-check.service "
                              f"{WANTS}/bootserverd-image-mark-good.service")
    assert enabled.stdout.split() == ["/lib/systemd/system/bootserverd-image-boot-check.service",
                                      "/lib/systemd/system/bootserverd-image-mark-good.service"], enabled
    # the installed command, as the units run it: a trial image gets one boot to be marked good
    state = '{"current": "a", "current_sha256": "1", "backup": "b", "backup_sha256": "2", "trial": true}'
    run = in_root(chroot, f"mkdir -p /images && echo '{state}' > /images/bootserverd-images.json && "
                          f": > /images/a.img && : > /images/b.img && "
                          f"bootserverd-image-update --boot-check && bootserverd-image-update --mark-good && "
                          f"bootserverd-image-update --status && bootserverd-image-update --help")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "a marked good" in run.stdout and '"trial": false' in run.stdout, run.stdout
    assert "--server" in run.stdout
    purged = in_root(chroot, f"apt-get purge -y -qq bootserverd-client && test ! -e {WANTS}/bootserverd-image-mark-good.service"
                             f" && test ! -e /usr/share/initramfs-tools/scripts/local-bottom/bootserverd-overlay")
    assert purged.returncode == 0, purged.stdout[-2000:] + purged.stderr[-2000:]


def test_systemd_unit_exposure_is_at_most_3(deb):
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           str(REPO / "debian" / "bootserverd.service")], capture_output=True, text=True,
                          timeout=120)
    line = next(l for l in proc.stdout.splitlines() if "Overall exposure level" in l)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 3.0, line


def test_installed_under_systemd_a_restart_a_crash_and_an_upgrade_are_pauses_for_an_nbd_client(deb, chroot, tmp_path):
    """#16 part 1 as a school runs it: the package installed with apt, Debian's systemd as PID 1
    (tests/support/systemd_root.py) starting the shipped unit with all its sandboxing, an NBD
    client reading throughout `systemctl restart`, a kill -9 that Restart= answers, and an
    upgrade of the package (dpkg -i: prerm, unpack, postinst's restart): every read completes
    with the right bytes on the one connection."""
    shutil.copy(deb, chroot / "tmp" / deb.name)
    installed = in_root(chroot, f"apt-get -o DPkg::Lock::Timeout=600 update -qq && apt-get install -y -qq "
                                f"--no-install-recommends systemd systemd-sysv /tmp/{deb.name}")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    (chroot / "usr/sbin/policy-rc.d").unlink()          # from now on services start as on a server
    shutil.copy(deb, chroot / "root" / deb.name)          # /tmp is the booted root's own tmpfs
    image = build_image(chroot / "var/lib/bootserverd/images" / f"{IMAGE}.img",
                        extra={"data": os.urandom(8 << 20)})
    image.chmod(0o644)
    (chroot / "etc/bootserverd/bootserverd.yaml").write_text(yaml.safe_dump({
        "server": {"address": "127.0.0.1", "state_dir": "/var/lib/bootserverd"},
        "images": {"dir": "/var/lib/bootserverd/images", "settle_seconds": 0, "default": IMAGE},
        "tftp": {"enabled": False}, "http": {"enabled": False}, "dhcp": {"enabled": False},
        "nbd": {"enabled": True, "listen": "127.0.0.1:10809"},
        "inventory": {"source": "yaml", "file": "inventory.yaml"}}))
    machine = SystemdRoot(chroot, tmp_path / "systemd.log")
    reader = None
    try:
        machine.start()

        def journal() -> str:
            return machine.run("journalctl -u bootserverd -o cat --no-pager").stdout

        deadline = time.monotonic() + 60
        while f"image {IMAGE} published" not in journal() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert machine.run("systemctl is-active bootserverd").stdout.strip() == "active", journal()[-3000:]
        reader = PipelinedReader(f"nbd://127.0.0.1:10809/{IMAGE}", str(image), depth=4, size=256 << 10,
                                 prefix=tuple(machine.enter("-n")))
        reader.start()
        assert reader.reads_after(50, timeout=30), (reader.error, journal()[-3000:])
        steps = {"systemctl restart": "systemctl restart bootserverd",
                 "kill -9 (Restart=on-failure)": "systemctl kill --signal=KILL --kill-whom=main bootserverd",
                 "package upgrade": f"dpkg -i /root/{deb.name}"}
        for what, command in steps.items():
            done = machine.run(command)
            assert done.returncode == 0, (what, done.stdout[-2000:], done.stderr[-2000:])
            assert reader.reads_after(50, timeout=30), (what, reader.error, journal()[-3000:])
        print(f"under systemd: {reader.reads} reads through restart, kill -9 and upgrade; "
              f"longest wait for one reply {reader.longest:.2f} s")
        assert reader.error is None
        assert journal().count("NBD resumed 1 connections kept across the restart") == 3, journal()[-3000:]
    finally:
        if reader is not None:
            reader.close()
        machine.close()
