"""Boot time, qemu start → marker, median of N: bootserverd against the reference chain
(dnsmasq for DHCP + TFTP, nbd-server for the root) in the same run, same image, same lab
(tests/e2e/harness.py), for the iPXE ROM path and the pxelinux path.

  ours, ipxe      iPXE ROM → script over HTTP → kernel + initrd over HTTP → NBD
  reference, ipxe iPXE ROM → script over TFTP → kernel + initrd over TFTP (dnsmasq has no HTTP)
  ours/ref, pxelinux   pxelinux.0 → config, kernel, initrd over TFTP → NBD

Both sides get the same router advertisement (no 16 s IPv6 wait) and 175.176 = 1.
The measuring part holds /tmp/bootserverd-bench.lock (other engineers benchmark on this box).

    python tests/bench/boot_bench.py [--runs 3]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.build_image import tiny_image  # noqa: E402
from tests.e2e.harness import DEVICE_MAC, HOSTNAME, KERNEL_ARGS, SERVER_IF, SERVER_IP, BootLab  # noqa: E402


class ReferenceLab(BootLab):
    """The same namespaces and guest, served by dnsmasq + nbd-server instead of bootserverd."""

    def __init__(self, *args, path: str, **kw):
        super().__init__(*args, **kw)
        self.path = path
        self.procs: list[subprocess.Popen] = []

    def _serve(self) -> None:
        from bootserverd.tools.populate import populate
        tftp = self.tmp / "tftp"
        populate(tftp)
        image = self.tmp / f"{self.image_name}.img"
        subprocess.run(["cp", str(self._image_path), str(image)], check=True)
        # the reference needs kernel and initrd outside the image
        subprocess.run(["unsquashfs", "-f", "-d", str(self.tmp / "x"), str(image), "boot"],
                       check=True, capture_output=True)
        for name in ("vmlinuz", "initrd.img"):
            (tftp / name).write_bytes((self.tmp / "x" / "boot" / name).resolve().read_bytes())
        cmdline = f"root=/dev/nbd0 nbdroot={SERVER_IP}:10809/{self.image_name} ip=dhcp ro {KERNEL_ARGS}"
        (tftp / "boot.ipxe").write_text(f"#!ipxe\nkernel tftp://{SERVER_IP}/vmlinuz initrd=initrd.img {cmdline}\n"
                                        f"initrd tftp://{SERVER_IP}/initrd.img\nboot\n")
        (tftp / "pxelinux.cfg").mkdir(exist_ok=True)
        (tftp / "pxelinux.cfg" / "default").write_text(
            f"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {cmdline}\n")
        conf = self.tmp / "nbd-server.conf"
        conf.write_text(f"[generic]\n  listenaddr = {SERVER_IP}\n  port = 10809\n"
                        f"[{self.image_name}]\n  exportname = {image}\n  readonly = true\n")
        boot = "boot.ipxe" if self.path == "ipxe" else "pxelinux.0"
        self.procs.append(self.server.popen(
            ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", f"--interface={SERVER_IF}",
             "--bind-interfaces", "--no-ping", f"--dhcp-leasefile={self.tmp}/dnsmasq.leases",
             f"--pid-file={self.tmp}/dnsmasq.pid", "--dhcp-range=10.47.0.100,10.47.0.150,1h",
             f"--dhcp-host={DEVICE_MAC},{HOSTNAME}", "--enable-tftp", f"--tftp-root={tftp}",
             "--dhcp-match=set:ipxe,175", "--dhcp-option-force=tag:ipxe,encap:175,176,1",
             f"--dhcp-boot={boot}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        # as deployed: nbd-server daemonizes and forks per client (-d mode hangs nbd-client here)
        self.pidfile = self.tmp / "nbd-server.pid"
        self.server.run(["nbd-server", "-C", str(conf), "-p", str(self.pidfile)], timeout=10, check=True)
        time.sleep(1)
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        self.ra = self.server.popen([sys.executable, str(REPO / "tests/e2e/ra.py"), SERVER_IF, "900"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _nbd_server_pids(self) -> list[int]:
        """The daemon (from its pidfile) and the children it forked for clients."""
        try:
            parent = int(self.pidfile.read_text())
        except (OSError, ValueError, AttributeError):
            return []
        pids = [parent]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                pids.append(int(stat.parent.name))
        return pids

    def close(self) -> None:
        for pid in self._nbd_server_pids():   # SIGTERM is ignored with a client attached
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        super().close()


def measure(lab: BootLab, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        result = lab.boot(timeout=180, firmware="bios")
        if result.marker is None:
            raise RuntimeError("no marker:\n" + "\n".join(result.console[-30:]))
        times.append(result.seconds)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    image = tiny_image()
    rows = {}
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path, loaders in (("ipxe", {}), ("pxelinux", {"loaders": {"bios": "pxelinux.0"}})):
            for side in ("bootserverd", "reference"):
                with tempfile.TemporaryDirectory(prefix="boot-bench-") as tmp:
                    if side == "bootserverd":
                        lab = BootLab(Path(tmp), image.path, image.name, boot=loaders)
                    else:
                        lab = ReferenceLab(Path(tmp), image.path, image.name, path=path)
                    with lab:
                        rows[(path, side)] = measure(lab, args.runs)
                print(f"{path:9} {side:12} " + " ".join(f"{t:6.1f}" for t in rows[(path, side)]), flush=True)
    print(f"\nboot time, qemu start to marker, median of {args.runs} (TCG, shared 2-core machine)")
    print(f"{'path':9} {'bootserverd':>12} {'reference':>12} {'ratio':>7}")
    for path in ("ipxe", "pxelinux"):
        ours, ref = (statistics.median(rows[(path, s)]) for s in ("bootserverd", "reference"))
        print(f"{path:9} {ours:11.1f}s {ref:11.1f}s {ours / ref:6.2f}x")
    http, tftp = (statistics.median(rows[(p, "bootserverd")]) for p in ("ipxe", "pxelinux"))
    print(f"bootserverd: HTTP path {http:.1f} s vs TFTP path {tftp:.1f} s ({http / tftp:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
