"""Helpers for the TFTP integration tests and benchmark.

Run as a module it starts a bootserverd TFTP service over a directory (on a free loopback
port) and prints "PORT <n> METRICS <m>" once listening (m: an HTTP port serving the service's
/metrics); transfer log lines go to stderr:

    python -m tests.support.tftp --root DIR [--max-blksize N] [--inventory JSON]

(from the repository: run by its path, this file would shadow the tftp package).

Files come from the real bootserverd.boot.files.BootFiles (confinement, virtual configs).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.procs import end

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON = str(REPO / ".venv" / "bin" / "python") if (REPO / ".venv").exists() else sys.executable


def make_boot_files(root: Path, inventory: dict, state_dir: Path):
    """The real bootserverd.boot.files.BootFiles over `root`, with a model built from
    {"devices": [Device kwargs...], "images": {name: {"kernel": path, "initrd": path}},
     "default_image": name}."""
    from ipaddress import IPv4Address
    from types import SimpleNamespace

    from bootserverd.boot.files import BootFiles
    from bootserverd.config.settings import Config, ServerConfig
    from bootserverd.model.objects import Defaults, Device
    from bootserverd.model.objects import InventoryRecords
    from bootserverd.model.snapshot import Inventory, Model
    from bootserverd.boot.resolver import BootResolver

    devices = tuple(Device(**d) for d in inventory.get("devices", ()))
    images = {name: SimpleNamespace(kernel=Path(i["kernel"]), initrd=Path(i["initrd"]))
              for name, i in inventory.get("images", {}).items()}
    directory = InventoryRecords(devices, {}, Defaults(image=inventory.get("default_image")))
    model = Model(Inventory(directory, images, None))
    config = Config(server=ServerConfig(address=IPv4Address("127.0.0.1"), state_dir=state_dir))
    return BootFiles(Path(root), BootResolver(config, model), model)


class Server:
    """The TFTP service in a child process (so real client programs and the reactor run
    concurrently without sharing our GIL)."""

    def __init__(self, root: Path, *args: str, inventory: dict | None = None) -> None:
        self.root = Path(root)
        cmd = [PYTHON, "-m", "tests.support.tftp", "--root", str(root),
               "--inventory", json.dumps(inventory or {}), *args]
        self.log_path = self.root.parent / f"tftpd-{os.getpid()}-{id(self)}.log"
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log,
                                     cwd=REPO, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"TFTP server failed to start: {line!r} {self.log()}")
        words = line.split()
        self.port, self.metrics_port = int(words[1]), int(words[3])

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in server log:\n{self.log()}")

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus samples, by name with labels."""
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        samples = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                samples[name] = float(value)
        return samples

    def wait_metric(self, name: str, at_least: float, timeout: float = 5.0) -> float:
        """The sample once it reaches `at_least` (a transfer is counted when its last ACK is in)."""
        end = time.monotonic() + timeout
        while True:
            value = self.metrics().get(name, 0.0)
            if value >= at_least or time.monotonic() > end:
                assert value >= at_least, f"{name} = {value}, wanted at least {at_least}"
                return value
            time.sleep(0.05)

    def stop(self) -> None:
        end(self.proc, 5)
        self._log.close()
        self.log_path.unlink(missing_ok=True)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--max-blksize", type=int, default=1468)
    ap.add_argument("--max-windowsize", type=int, default=64)
    ap.add_argument("--max-transfers", type=int, default=1024)   # TftpConfig's default
    ap.add_argument("--max-per-client", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--retries", type=int, default=5)
    ap.add_argument("--inventory", default="{}", help="JSON, see make_boot_files")
    ap.add_argument("--quiet", action="store_true", help="no per-transfer log lines")
    ap.add_argument("--profile", type=Path, help="write cProfile stats here at exit")
    ap.add_argument("--on-hup", default=None,
                    help='JSON of TftpConfig fields ("listen": "HOST:PORT") applied on SIGHUP')
    a = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))

    from bootserverd.config.settings import Listen, TftpConfig
    cfg = TftpConfig(listen=Listen(a.host, a.port), root=a.root, max_blksize=a.max_blksize,
                     max_windowsize=a.max_windowsize, max_transfers=a.max_transfers,
                     max_transfers_per_client=a.max_per_client, timeout=a.timeout,
                     retries=a.retries)

    from twisted.internet import reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver, LogLevel, \
        FilteringLogObserver, LogLevelFilterPredicate
    from twisted.web.resource import Resource
    from twisted.web.server import Site
    from bootserverd.ops.metrics import Metrics
    from services.http.metrics import MetricsResource
    from services.tftp import TFTPService

    level = LogLevel.warn if a.quiet else LogLevel.info
    obs = FilteringLogObserver(textFileLogObserver(sys.stderr),
                               [LogLevelFilterPredicate(defaultLogLevel=level)])
    globalLogBeginner.beginLoggingTo([obs], redirectStandardIO=False)
    import tempfile
    state = Path(tempfile.mkdtemp(prefix="tftp-state-", dir=a.root.parent))
    boot_files = make_boot_files(a.root, json.loads(a.inventory), state)
    metrics = Metrics()
    svc = TFTPService(cfg, boot_files, reactor=reactor, metrics=metrics)
    svc.startService()

    class MetricsPage(Resource):
        isLeaf = True

        def render_GET(self, request):
            return MetricsResource(metrics).render(request)

    root = Resource()
    root.putChild(b"metrics", MetricsPage())
    site = Site(root)
    site.noisy = False
    http = reactor.listenTCP(0, site, interface="127.0.0.1")
    print(f"PORT {svc.port.getHost().port} METRICS {http.getHost().port}", flush=True)
    if a.on_hup:
        import dataclasses
        import signal
        changes = json.loads(a.on_hup)
        if "listen" in changes:
            host, _, port = changes["listen"].rpartition(":")
            changes["listen"] = Listen(host, int(port))

        def hup(*_):
            svc.reconfigure(dataclasses.replace(svc.config, **changes))
            print(f"PORT {svc.port.getHost().port}", flush=True)
        signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(hup))
    reactor.addSystemEventTrigger("before", "shutdown", svc.stopService)
    reactor.addSystemEventTrigger("after", "shutdown", shutil.rmtree, state, True)
    if a.profile:
        import cProfile
        cProfile.runctx("reactor.run()", globals(), {"reactor": reactor}, str(a.profile))
    else:
        reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())


# ---- raw-socket peer for faults a real client cannot produce on demand -------------------
class RawClient:
    """A UDP socket speaking TFTP by hand (bounded waits only)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.server = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.tids: set = set()

    def send(self, data: bytes, addr=None) -> None:
        self.sock.sendto(data, addr or self.server)

    def rrq(self, name, mode: str = "octet", **options) -> None:
        raw = name if isinstance(name, bytes) else name.encode("utf-8", "surrogateescape")
        opts = b"".join(k.encode() + b"\0" + str(v).encode() + b"\0" for k, v in options.items())
        self.send(b"\x00\x01" + raw + b"\0" + mode.encode() + b"\0" + opts)

    def recv(self, timeout: float = 2.0):
        """(packet, addr) or (None, None) after `timeout`."""
        self.sock.settimeout(timeout)
        try:
            data, addr = self.sock.recvfrom(70000)
        except socket.timeout:
            return None, None
        from tftp import codec
        if addr != self.server:
            self.tids.add(addr)
        return codec.decode(data), addr

    def recv_all(self, window: float) -> list:
        """Everything that arrives within `window` seconds."""
        out, end = [], time.monotonic() + window
        while (left := end - time.monotonic()) > 0:
            p, a = self.recv(left)
            if p is None:
                break
            out.append((p, a))
        return out

    def close(self) -> None:
        """End every transfer we saw (an ERROR from the client), so none lingers."""
        for tid in self.tids:
            self.sock.sendto(b"\x00\x05\x00\x00closed\x00", tid)
        self.sock.close()
