"""Helpers for the NBD integration tests and benchmark.

Run as a module it starts bootserverd's NBD service over a directory of *.img files
(``python -m tests.support.nbd DIR [--max-per-client N] [--handshake-timeout S] [--observe]``
from the repository: run by its path, this file would shadow the nbd package) and prints
``PORT <n>`` once listening (``PORT <n> HTTP <m>`` with --observe: the service then counts
into a Metrics registry and an HTTP port on 127.0.0.1 serves ``/metrics`` and ``/sessions``,
its status() and live_sessions() as JSON); the tests start it with Popen and stop it by that
PID.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

from tests.support.files import sha256  # noqa: F401  (callers import it from here)
from tests.support.procs import end

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

LIBNBD_PATH = "/usr/lib/python3/dist-packages/nbd.py"


def load_libnbd():
    """Debian's python3-libnbd is also called ``nbd``; load it under another name."""
    if "libnbd" in sys.modules:
        return sys.modules["libnbd"]
    if "/usr/lib/python3/dist-packages" not in sys.path:
        sys.path.append("/usr/lib/python3/dist-packages")     # for libnbdmod
    spec = importlib.util.spec_from_file_location("libnbd", LIBNBD_PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["libnbd"] = mod
    spec.loader.exec_module(mod)
    return mod


PEER_CWD = "/"   # nbdsh is "python3 -m nbd": run from the repo it would find our nbd/


def peer_env() -> dict:
    """Environment for peer programs: nbdsh is Python and must not see our nbd/."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    # nbdsh runs "python3" from PATH; it must be Debian's (where python3-libnbd lives).
    env["PATH"] = "/usr/bin:/bin:" + env.get("PATH", "")
    return env


class DirImages:
    """ImageStore stand-in over a directory: every *.img file is published, live."""

    def __init__(self, directory) -> None:
        self.dir = Path(directory)

    def _image(self, path: Path):
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return SimpleNamespace(name=path.name[:-4], path=path, size=size, sha256=None,
                               series="test", version=None, arch="amd64")

    def published(self):
        imgs = (self._image(p) for p in sorted(self.dir.glob("*.img")))
        return [i for i in imgs if i is not None]

    def get(self, name):
        if "/" in name or not name:
            return None
        return self._image(self.dir / f"{name}.img")

    def subscribe(self, callback):
        return lambda: None          # nothing ever changes behind the directory listing


class Server:
    """Our NBD service in a child process (killed by its PID at the end)."""

    def __init__(self, directory, log_path, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log_path = Path(log_path)
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.nbd", str(directory), *args], cwd=str(ROOT), env=env,
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()   # bounded: the child exits on any error
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"NBD server did not start: {line!r}\n{self.log_text()}")
        words = line.split()
        self.port = int(words[1])
        self.http_port = int(words[3]) if len(words) > 3 else None   # --observe

    def get(self, path: str) -> bytes:
        """GET /metrics or /sessions from a server started with --observe."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as answer:
            return answer.read()

    def metric(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics (None when the series does not exist yet)."""
        from prometheus_client.parser import text_string_to_metric_families
        for family in text_string_to_metric_families(self.get("/metrics").decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None

    def sessions(self) -> dict:
        return json.loads(self.get("/sessions"))

    def uri(self, name: str = "") -> str:
        return f"nbd://127.0.0.1:{self.port}/{name}"

    def log_text(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in server log:\n{self.log_text()}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        end(self.proc, 5)
        self.log.close()


# --- a raw client, for faults no real peer produces --------------------------------------


def random_reads(libnbd, handle, expected: bytes, stop, seed: int, seconds: float,
                 max_kib: int = 256, after=None) -> dict:
    """Random preads of 1..max_kib-1 KiB until ``stop`` is set (or ``seconds`` pass), each
    compared with ``expected``; counts reads, errors, wrong answers, and reads made while
    ``after`` (an Event, e.g. "file deleted") was set. For a thread per client."""
    rng, stats = random.Random(seed), dict(reads=0, errors=0, wrong=0, after=0)
    deadline = time.monotonic() + seconds            # bounded even if the test thread dies
    while not stop.is_set() and time.monotonic() < deadline:
        n = rng.randrange(1, max_kib) * 1024
        off = rng.randrange(0, len(expected) - n + 1)
        try:
            got = handle.pread(n, off)
        except libnbd.Error:
            stats["errors"] += 1
            continue
        stats["reads"] += 1
        stats["wrong"] += got != expected[off:off + n]
        stats["after"] += after is not None and after.is_set()
    return stats

def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def raw_go(port: int, name: str, structured: bool = False, timeout: float = 5.0):
    """Connect, negotiate with NBD_OPT_GO, return (socket, size, flags)."""
    from nbd import codec as c
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    assert recv_exact(s, 18)[:16] == b"NBDMAGICIHAVEOPT"
    s.sendall(struct.pack(">I", c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES))
    if structured:
        s.sendall(c.option_request(c.OPT_STRUCTURED_REPLY))
        assert read_option_reply(s)[1] == c.REP_ACK
    raw = name.encode()
    s.sendall(c.option_request(c.OPT_GO, struct.pack(">I", len(raw)) + raw + b"\0\0"))
    size = flags = None
    while True:
        _, typ, data = read_option_reply(s)
        if typ == c.REP_INFO and struct.unpack(">H", data[:2])[0] == c.INFO_EXPORT:
            size, flags = struct.unpack(">QH", data[2:])
        elif typ == c.REP_ACK:
            return s, size, flags
        elif typ != c.REP_INFO:
            raise RuntimeError(f"GO refused: 0x{typ:x} {data!r}")


def read_option_reply(s: socket.socket):
    from nbd import codec as c
    magic, opt, typ, n = c.OPTION_REPLY_HEADER.unpack(recv_exact(s, 20))
    assert magic == c.OPTION_REPLY_MAGIC
    return opt, typ, recv_exact(s, n)


def listen_observer(reactor, service, metrics) -> int:
    """--observe: an HTTP port on 127.0.0.1 serving /metrics (the Prometheus text, as the daemon
    does) and /sessions (the service's status() and live_sessions() as JSON); returns the port."""
    from dataclasses import asdict

    from twisted.web.resource import Resource
    from twisted.web.server import Site

    class Observer(Resource):
        isLeaf = True

        def render_GET(self, request):
            if request.path == b"/metrics":
                request.setHeader(b"Content-Type", metrics.content_type.encode())
                return metrics.render()
            request.setHeader(b"Content-Type", b"application/json")
            return json.dumps({"status": service.status(),
                               "live": [asdict(s) for s in service.live_sessions()]}).encode()

    return reactor.listenTCP(0, Site(Observer()), interface="127.0.0.1").getHost().port


def main() -> None:
    from bootserverd.config.settings import Listen, NbdConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("directory")
    ap.add_argument("--max-connections", type=int, default=512)
    ap.add_argument("--max-per-client", type=int, default=64)
    ap.add_argument("--handshake-timeout", type=float, default=10.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--host", default="127.0.0.1", help="listen address (the storm benchmark's namespaces)")
    ap.add_argument("--send-threads", type=int, default=NbdConfig.send_threads,
                    help="nbd.send_threads (0: the reactor sends everything)")
    ap.add_argument("--quiet", action="store_true", help="warnings only (benchmark)")
    ap.add_argument("--observe", action="store_true", help="metrics, and /metrics and /sessions over HTTP")
    args = ap.parse_args()

    from twisted.internet import reactor
    from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                                globalLogBeginner, textFileLogObserver)

    from services.nbd import NBDService

    level = LogLevel.warn if args.quiet else LogLevel.info
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(level)])],
        redirectStandardIO=False)
    config = NbdConfig(listen=Listen(args.host, args.port),
                       max_connections=args.max_connections,
                       max_connections_per_client=args.max_per_client,
                       handshake_timeout=args.handshake_timeout, send_threads=args.send_threads)
    metrics = None
    if args.observe:
        from bootserverd.ops.metrics import Metrics
        metrics = Metrics()
    service = NBDService(config, DirImages(args.directory), reactor=reactor, metrics=metrics)
    service.startService()
    observer = f" HTTP {listen_observer(reactor, service, metrics)}" if args.observe else ""
    print(f"PORT {service.address[1]}{observer}", flush=True)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
