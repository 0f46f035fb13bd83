"""The Debian package: built with dpkg-buildpackage, lintian-clean, installed with apt into a
clean Debian 12 root made by debootstrap, and run there (the package's own autopkgtest).

The minbase root is cached between runs in /var/cache/bootserverd-tests (outside the repo);
each run unpacks a fresh copy, so nothing from an earlier install is left in it.
"""

import fcntl
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/bootserverd-tests")
BASE = CACHE / "bookworm-minbase.tar"
MIRROR = "http://deb.debian.org/debian"


def minbase_tarball() -> Path:
    """The debootstrap minbase root as a tarball, made once (tests/e2e/debian_image.py shares it)."""
    if BASE.exists():
        return BASE
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".minbase.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # two test runs at once build it once
        if BASE.exists():
            return BASE
        staging = CACHE / "minbase.partial"
        shutil.rmtree(staging, ignore_errors=True)
        subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(staging), MIRROR],
                       check=True, stdout=subprocess.DEVNULL, timeout=900)
        with tarfile.open(f"{BASE}.partial", "w") as tar:
            tar.add(staging, arcname=".")
        Path(f"{BASE}.partial").rename(BASE)
        shutil.rmtree(staging, ignore_errors=True)
    return BASE


@pytest.fixture(scope="module")
def deb() -> Path:
    proc = subprocess.run([str(REPO / "tools" / "build-deb")], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lintian = (REPO / "build" / "deb" / "lintian.log").read_text()
    assert not [line for line in lintian.splitlines() if line.startswith("E:")], lintian
    return REPO / proc.stdout.strip().splitlines()[-1]


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


def test_systemd_unit_exposure_is_at_most_3(deb):
    proc = subprocess.run(["systemd-analyze", "security", "--offline=yes",
                           str(REPO / "debian" / "bootserverd.service")], capture_output=True, text=True,
                          timeout=120)
    line = next(l for l in proc.stdout.splitlines() if "Overall exposure level" in l)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 3.0, line
