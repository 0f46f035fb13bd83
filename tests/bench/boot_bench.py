"""Boot time, qemu start → marker, median of N: bootserverd against the reference chain
(dnsmasq for DHCP + TFTP, nbd-server for the root) in the same run, same image, same lab
(tests/e2e/harness.py), on every path:

  ipxe        BIOS, iPXE ROM → script, kernel, initrd over HTTP  | ref: all over TFTP (dnsmasq has no HTTP)
  pxelinux    BIOS, pxelinux.0 → config, kernel, initrd over TFTP | ref: the same from dnsmasq
  lpxelinux   BIOS, lpxelinux.0 → config over TFTP, kernel and initrd over HTTP | ref: pxelinux over TFTP
  signed      UEFI, Secure Boot ON: shim → Debian's signed GRUB → kernel, initrd over TFTP
              (that GRUB has no http module) | ref: dnsmasq serving the same shim and GRUB
  signed-off  the signed chain with Secure Boot off | ref: the same from dnsmasq
  uefi-ipxe   UEFI, Secure Boot off: ipxe.efi → kernel, initrd over HTTP (what the signed chain
              replaced as the default) | ref: GRUB over TFTP, Secure Boot off
  grub-http   UEFI, Secure Boot off: a GRUB with http (grub-mkimage), boot.grub_http: kernel and
              initrd over HTTP | ref: GRUB over TFTP, Secure Boot off

Both sides get the same router advertisement (no 16 s IPv6 wait) and 175.176 = 1.
The measuring part holds /tmp/bootserverd-bench.lock (other engineers benchmark on this box).
--debian adds the real Debian image (its ~30 MB initrd) on signed-off and uefi-ipxe: what the
signed chain's TFTP kernels cost at a real image's size.

    python tests/bench/boot_bench.py [--runs 3] [--paths ipxe,signed] [--debian]
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

from tests.e2e import grub_http  # noqa: E402
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
        (tftp / "grub").mkdir(exist_ok=True)      # Debian's grubnetx64 reads $prefix/grub.cfg
        (tftp / "grub" / "grub.cfg").write_text(
            f"set timeout=0\nmenuentry linux {{\n  linux /vmlinuz {cmdline}\n  initrd /initrd.img\n}}\n")
        (tftp / "pxelinux.cfg").mkdir(exist_ok=True)
        (tftp / "pxelinux.cfg" / "default").write_text(
            f"DEFAULT linux\nLABEL linux\n  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND {cmdline}\n")
        conf = self.tmp / "nbd-server.conf"
        conf.write_text(f"[generic]\n  listenaddr = {SERVER_IP}\n  port = 10809\n"
                        f"[{self.image_name}]\n  exportname = {image}\n  readonly = true\n")
        boot = {"ipxe": "boot.ipxe", "pxelinux": "pxelinux.0", "grub": "shimx64.efi"}[self.path]
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


# path: (firmware, bootserverd's boot section, the reference chain it is held against)
PATHS = {
    "ipxe": ("bios", {}, "ipxe"),
    "pxelinux": ("bios", {"loaders": {"bios": "pxelinux.0"}}, "pxelinux"),
    "lpxelinux": ("bios", {"loaders": {"bios": "lpxelinux.0"}}, "pxelinux"),
    "signed": ("uefi-sb", {}, "grub"),
    "signed-off": ("uefi", {}, "grub"),
    "uefi-ipxe": ("uefi", {"loaders": {"efi64": "ipxe.efi"}}, "grub"),
    "grub-http": ("uefi", {"loaders": {"efi64": grub_http.NAME}, "grub_http": True}, "grub"),
}


def measure(lab: BootLab, runs: int, firmware: str, marker: str | None = None, memory: int = 512) -> list[float]:
    times = []
    for _ in range(runs):
        result = lab.boot(timeout=400, firmware=firmware, memory=memory, **({"markers": (marker,)} if marker else {}))
        if result.marker is None:
            raise RuntimeError("no marker:\n" + "\n".join(result.console[-30:]))
        times.append(result.seconds)
    return times


def run(side: str, path: str, image, runs: int, marker=None, memory=512) -> list[float]:
    firmware, boot, reference = PATHS[path]
    with tempfile.TemporaryDirectory(prefix="boot-bench-") as tmp:
        if side == "bootserverd":
            lab = BootLab(Path(tmp), image.path, image.name, boot=boot)
        else:
            lab = ReferenceLab(Path(tmp), image.path, image.name, path=reference)
        with lab:
            if side == "bootserverd" and path == "grub-http":
                grub_http.build(lab.tmp / "tftp")
            return measure(lab, runs, firmware, marker, memory)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--debian", action="store_true")
    args = parser.parse_args()
    paths = args.paths.split(",")
    image = tiny_image()
    rows, refs = {}, {}
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for path in paths:
            firmware, _, reference = PATHS[path]
            rows[path] = run("bootserverd", path, image, args.runs)
            print(f"{path:10} bootserverd " + " ".join(f"{t:6.1f}" for t in rows[path]), flush=True)
            if (reference, firmware) not in refs:    # one reference run per chain and firmware
                refs[(reference, firmware)] = run("reference", path, image, args.runs)
                print(f"{path:10} reference   " + " ".join(f"{t:6.1f}" for t in refs[(reference, firmware)]),
                      flush=True)
        debian = {}
        if args.debian:
            from tests.e2e.debian_image import MARKER, debian_image
            big = debian_image()
            for path in ("signed-off", "uefi-ipxe"):
                debian[path] = run("bootserverd", path, big, args.runs, marker=MARKER, memory=1024)
                print(f"debian {path:10} " + " ".join(f"{t:6.1f}" for t in debian[path]), flush=True)
    med = statistics.median
    print(f"\nboot time, qemu start to marker, median of {args.runs} (TCG, shared 2-core machine)")
    print(f"{'path':10} {'firmware':8} {'bootserverd':>12} {'reference':>12} {'ratio':>7}  reference chain")
    for path in paths:
        firmware, _, reference = PATHS[path]
        ours, ref = med(rows[path]), med(refs[(reference, firmware)])
        print(f"{path:10} {firmware:8} {ours:11.1f}s {ref:11.1f}s {ours / ref:6.2f}x  {reference} (dnsmasq + nbd-server)")
    if "grub-http" in rows and ("grub", "uefi") in refs:
        print(f"GRUB, kernels over HTTP vs over TFTP (reference GRUB): {med(refs[('grub', 'uefi')]) / med(rows['grub-http']):.2f}x faster")
    if "signed-off" in rows and "uefi-ipxe" in rows:
        print(f"the signed chain costs {med(rows['signed-off']) - med(rows['uefi-ipxe']):+.1f} s over ipxe.efi (tiny image, Secure Boot off)")
    if debian:
        print(f"debian image: signed chain {med(debian['signed-off']):.1f} s, ipxe.efi {med(debian['uefi-ipxe']):.1f} s "
              f"({med(debian['signed-off']) - med(debian['uefi-ipxe']):+.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
