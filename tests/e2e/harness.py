"""The boot lab: two network namespaces made here (server, client), a bridge and a tap in the
client namespace, bootserverd alone in the server namespace serving DHCP, TFTP, HTTP and NBD,
and qemu (TCG) PXE-booting from the tap. Everything is deleted on close; every wait is bounded.

    client ns:  qemu ── tap ── br ── veth ═══ veth (10.47.0.1/24) :server ns (bootserverd, RA)

``BootLab(..., supervised=True)`` runs bootserverd the way systemd runs its unit (Type=notify, fd
store: tests/support/supervisor.py), so a test can restart it under a running guest.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.support.config import write_config  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.netns import Netns, veth  # noqa: E402
from tests.support.supervisor import Supervisor  # noqa: E402

SERVER_IP = "10.47.0.1"
NETWORK = "10.47.0.0/24"
SERVER_IF = "e2esrv"
DEVICE_MAC = "52:54:00:e2:e2:01"
HOSTNAME = "e2e-pc1"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced, Microsoft's keys enrolled (Debian's ovmf): what a PC leaves the factory with
OVMF_CODE_SB = Path("/usr/share/OVMF/OVMF_CODE_4M.ms.fd")
OVMF_VARS_SB = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
KERNEL_ARGS = "console=ttyS0,115200 panic=-1"


MACHINE_LOCK = "/tmp/bootserverd-bench.lock"
LOCK_WAIT = 1800                   # s: another engineer's benchmark may hold the machine


@contextlib.contextmanager
def machine_lock():
    """One qemu (or benchmark) at a time on this 2-core machine: hold the shared lock meanwhile."""
    with open(MACHINE_LOCK, "w") as lock:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{MACHINE_LOCK} still held after {LOCK_WAIT} s") from None
                time.sleep(1)
        yield


def _daemon_argv(ns: Netns, config: Path) -> list[str]:
    return ns.cmd([sys.executable, "-m", "bootserverd", "run", "--config", str(config)])


def _daemon_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BOOTSERVERD_ALLOW_ROOT": "1"}
    env.pop("JOURNAL_STREAM", None)
    return env


class NsDaemon(Daemon):
    """tests/support/daemon.Daemon, started inside a namespace (`ip netns exec` execs, so the
    Popen PID is the daemon's own and SIGTERM reaches it)."""

    def __init__(self, ns: Netns, config: Path):
        self.proc = subprocess.Popen(_daemon_argv(ns, config), cwd=REPO, env=_daemon_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def log(self) -> str:
        """Every line so far (drains the queue without waiting)."""
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return "\n".join(self.lines)
            if line is None:
                return "\n".join(self.lines)
            self.lines.append(line)


class SupervisedDaemon(NsDaemon):
    """NsDaemon under tests/support/supervisor.Supervisor, which speaks systemd 252's notify and
    fd-store protocol: NBD connections outlive ``restart``. The exec chain (supervisor's handout
    shell, `ip netns exec`) keeps the PID, so the daemon is the main PID and gets LISTEN_FDS; the
    notify socket is a file, reachable from the namespace. Every process writes to one log file,
    followed here line by line so that ``wait_for`` and ``log`` work as for NsDaemon."""

    FOLLOW_HOURS = 4          # bound of the follower thread (ended by stop() long before)

    def __init__(self, ns: Netns, config: Path, log_path: Path):
        log_path.touch()
        self.supervisor = Supervisor(_daemon_argv(ns, config), env=_daemon_env(), cwd=REPO,
                                     log_path=log_path, fd_store_max=4096)
        self.lines = []
        self._queue = queue.Queue()
        self._stopped = threading.Event()
        self._code: int | None = None
        threading.Thread(target=self._follow, args=(log_path,), daemon=True).start()
        try:
            self.supervisor.start(timeout=60)
        except BaseException:
            self.stop()
            raise

    def _follow(self, path: Path) -> None:
        deadline = time.monotonic() + self.FOLLOW_HOURS * 3600
        partial = b""
        with open(path, "rb") as log:
            while time.monotonic() < deadline:
                stopped = self._stopped.is_set()      # read once more after the stop
                chunk = log.read()
                *lines, partial = (partial + chunk).split(b"\n")
                for line in lines:
                    self._queue.put(line.decode("utf-8", "replace"))
                if stopped:
                    break
                if not chunk:
                    time.sleep(0.05)
        self._queue.put(None)

    def restart(self, sig: int = signal.SIGTERM, pause: float = 0.0) -> float:
        """Stop with ``sig`` (the fd store stays, as under `systemctl restart` or Restart=), wait
        ``pause`` s (RestartSec=), start again; seconds from the signal to the new READY=1."""
        began = time.monotonic()
        self.supervisor.stop(sig, timeout=10)
        time.sleep(pause)
        spawned = time.monotonic()
        return spawned - began + self.supervisor.start(timeout=60)

    def stop(self, timeout: float = 10.0) -> int:
        """`systemctl stop`: SIGTERM, then the store is closed (the clients' connections with it)."""
        if not self._stopped.is_set():
            try:
                if self.supervisor.pid is not None:
                    self._code = self.supervisor.stop(signal.SIGTERM, timeout)
            finally:
                self.supervisor.close()
                self._stopped.set()
        return self._code

    def signal(self, signum: int) -> None:    # last: the name hides the module in the class body
        os.kill(self.supervisor.pid, signum)


@dataclass
class BootResult:
    marker: str | None
    seconds: float
    console: list[str] = field(default_factory=list)


class Qemu:
    """One guest; its serial console read line by line in a thread."""

    def __init__(self, argv: list[str]):
        self.started = time.monotonic()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.console: list[str] = []
        self.stamped: list[tuple[float, str]] = []    # (monotonic arrival, line): every line, as it came
        self._queue: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.stamped.append((time.monotonic(), line))
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, markers: tuple[str, ...], timeout: float, echo=None) -> tuple[str | None, str | None]:
        """(marker found, its line) or (None, None) at timeout or when qemu exits."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                return None, None
            self.console.append(line)
            if echo is not None:
                echo(line)
            for marker in markers:
                if marker in line:
                    return marker, line
        return None, None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


class BootLab:
    def __init__(self, tmp: Path, image_path: Path, image_name: str, *, boot: dict | None = None,
                 devices: list[dict] | None = None, server: dict | None = None, supervised: bool = False):
        self.tmp = tmp
        self.supervised = supervised
        self.image_name = image_name
        self.server = self.client = None
        self.daemon: NsDaemon | None = None
        self.ra: subprocess.Popen | None = None
        self.guests: list[Qemu] = []
        self.devices = devices if devices is not None else [
            {"mac": DEVICE_MAC, "hostname": HOSTNAME, "type": "thinclient", "image": image_name}]
        self.boot_section = {"kernel_args": KERNEL_ARGS, **(boot or {})}
        self.server_extra = server or {}
        self._image_path = image_path

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> "BootLab":
        try:
            self._network()
            self._serve()
        except BaseException:
            self.close()
            raise
        return self

    def _network(self) -> None:
        self.server, self.client = Netns("e2es"), Netns("e2ec")
        veth(self.server, SERVER_IF, self.client, "uplink")
        self.server.ip("addr", "add", f"{SERVER_IP}/24", "dev", SERVER_IF)
        c = self.client
        c.ip("link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        c.ip("tuntap", "add", "dev", "tap0", "mode", "tap")
        for link in ("uplink", "tap0"):
            c.ip("link", "set", link, "master", "br0")
        for link in ("br0", "tap0"):
            c.ip("link", "set", link, "up")

    def _serve(self) -> None:
        from bootserverd.tools.populate import populate
        images = self.tmp / "images"
        images.mkdir(parents=True, exist_ok=True)
        published = images / f"{self.image_name}.img"
        try:
            os.link(self._image_path, published)    # the Debian image is ~200 MB: no copy per test
        except OSError:
            shutil.copy2(self._image_path, published)
        old = time.time() - 60                 # settled: no settle wait before publishing
        os.utime(images / f"{self.image_name}.img", (old, old))
        populate(self.tmp / "tftp")
        self.config = write_config(
            self.tmp, {"devices": self.devices},
            server={"address": SERVER_IP, "state_dir": "../state", **self.server_extra},
            tftp={"enabled": True, "listen": f"{SERVER_IP}:69", "root": "../tftp"},
            nbd={"enabled": True, "listen": f"{SERVER_IP}:10809"},
            http={"enabled": True, "listen": f"{SERVER_IP}:8080"},
            dhcp={"enabled": True, "interfaces": [SERVER_IF],
                  "subnets": [{"network": NETWORK, "pool": "10.47.0.100-10.47.0.150", "lease_time": 3600}]},
            boot=self.boot_section)
        if self.supervised:
            self.daemon = SupervisedDaemon(self.server, self.config, self.tmp / "daemon.log")
        else:
            self.daemon = NsDaemon(self.server, self.config)
        self.daemon.wait_for("bootserverd started", timeout=30)
        self.daemon.wait_for(f"{self.image_name}", timeout=30)    # the image is published
        self.ra = self.server.popen([sys.executable, str(Path(__file__).with_name("ra.py")), SERVER_IF, "900"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self) -> None:
        for guest in self.guests:
            guest.stop()
        if self.ra is not None and self.ra.poll() is None:
            self.ra.send_signal(signal.SIGTERM)
            self.ra.wait(10)
        if self.daemon is not None:
            self.daemon.stop()
        for ns in (self.client, self.server):
            if ns is not None:
                ns.delete()

    def __enter__(self) -> "BootLab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- guests -----------------------------------------------------------------------------
    def qemu_argv(self, firmware: str = "bios", nic: str = "virtio-net-pci", mac: str = DEVICE_MAC,
                  memory: int = 512) -> list[str]:
        argv = ["qemu-system-x86_64", "-accel", "tcg", "-m", str(memory), "-smp", "1",
                "-nodefaults", "-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
                "-no-reboot", "-boot", "n",
                "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no"]
        if firmware in ("uefi", "uefi-sb"):
            secure = firmware == "uefi-sb"
            vars_copy = self.tmp / f"OVMF_VARS.{len(self.guests)}.fd"
            shutil.copyfile(OVMF_VARS_SB if secure else OVMF_VARS, vars_copy)
            if secure:     # the SB firmware needs SMM and a write-protected varstore flash
                argv += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
            else:
                argv += ["-machine", "q35"]
            argv += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE_SB if secure else OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
                     # the firmware's own PXE (no iPXE option ROM): arch 7 → the efi64 loader over TFTP
                     "-device", f"{nic},netdev=n0,mac={mac},romfile="]
        else:
            argv += ["-machine", "pc", "-device", f"{nic},netdev=n0,mac={mac}"]
        return self.client.cmd(argv)

    def boot(self, timeout: float = 150, echo=None, markers: tuple[str, ...] | None = None,
             failures: tuple[str, ...] | None = None, **kw) -> BootResult:
        """Run a guest until a line holds one of ``markers`` (success) or ``failures``."""
        from tests.e2e.build_image import FAIL, MARKER
        markers = markers or (MARKER,)
        guest = Qemu(self.qemu_argv(**kw))
        self.guests.append(guest)
        try:
            found, line = guest.wait_for((*markers, *(failures or (FAIL,))), timeout, echo)
            seconds = time.monotonic() - guest.started
        finally:
            guest.stop()
        return BootResult(line if found in markers else None, seconds, guest.console)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """``bootserverd ARGS -c CONFIG`` run inside the server namespace."""
        return self.server.run([sys.executable, "-m", "bootserverd", args[0], "-c", str(self.config), *args[1:]],
                               timeout=timeout, cwd=REPO)

    def explain(self, result: BootResult) -> str:
        """What a failed assertion shows: the guest's console tail and the server's log."""
        return ("guest console (last 40 lines):\n" + "\n".join(result.console[-40:]) +
                "\n\nbootserverd log:\n" + (self.daemon.log() if self.daemon else ""))
