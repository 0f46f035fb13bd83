"""Boot time of the real Debian image (tests/e2e/debian_image.py), qemu start → the marker
printed after multi-user.target, median of N: bootserverd (iPXE ROM, kernel + initrd over
HTTP, NBD) against the reference chain of tests/bench/boot_bench.py (dnsmasq DHCP + TFTP,
nbd-server) in the same run, boots alternated between the two labs. Holds /tmp/bootserverd-bench.lock while measuring.

    python tests/e2e/debian_bench.py [--runs 3] [--paths ipxe,pxelinux]
"""

from __future__ import annotations

import argparse
import fcntl
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "bench")]

from boot_bench import ReferenceLab  # noqa: E402  (tests/bench/boot_bench.py)
from tests.e2e.debian_image import FAILURES, MARKER, debian_image  # noqa: E402
from tests.e2e.harness import BootLab  # noqa: E402

LOADERS = {"ipxe": {}, "pxelinux": {"loaders": {"bios": "pxelinux.0"}}}


def boot_once(lab: BootLab) -> float:
    result = lab.boot(timeout=300, firmware="bios", memory=1024, markers=(MARKER,), failures=FAILURES)
    if result.marker is None:
        raise RuntimeError("no marker:\n" + "\n".join(result.console[-40:]))
    return result.seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", default="ipxe")
    args = parser.parse_args()
    paths = [p for p in LOADERS if p in args.paths.split(",")]
    image = debian_image()
    rows = {}
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in paths:
            # both labs up at once (separate namespaces), boots alternated: the load other
            # engineers put on the machine drifts, and must not favour one side
            with tempfile.TemporaryDirectory(prefix="debian-bench-") as tmp:
                for sub in ("ours", "ref"):
                    (Path(tmp) / sub).mkdir()
                with BootLab(Path(tmp) / "ours", image.path, image.name, boot=LOADERS[path]) as ours, \
                        ReferenceLab(Path(tmp) / "ref", image.path, image.name, path=path) as ref:
                    for _ in range(args.runs):
                        for side, lab in (("bootserverd", ours), ("reference", ref)):
                            rows.setdefault((path, side), []).append(boot_once(lab))
            for side in ("bootserverd", "reference"):
                print(f"{path:9} {side:12} " + " ".join(f"{t:6.1f}" for t in rows[(path, side)]), flush=True)
    print(f"\nDebian image ({image.path.stat().st_size >> 20} MiB squashfs, Debian's initramfs, systemd to "
          f"multi-user.target): qemu start to marker, median of {args.runs} (TCG, shared 2-core machine)")
    print(f"{'path':9} {'bootserverd':>12} {'reference':>12} {'ratio':>7}")
    for path in paths:
        ours, ref = (statistics.median(rows[(path, s)]) for s in ("bootserverd", "reference"))
        print(f"{path:9} {ours:11.1f}s {ref:11.1f}s {ours / ref:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
