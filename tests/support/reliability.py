"""The daemon as shipped (`python -m bootserverd run`) with tight limits, on loopback ports,
for the flood and fault tests; plus small bounded helpers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.http import sha256  # noqa: F401  (re-exported for the reliability tests)
from tests.support.images import build_image

IMAGE = "rel-2026-01-01-000000-amd64"




def start_daemon(tmp: Path, image_mb: int = 16, tftp: dict | None = None, nbd: dict | None = None,
                 http: dict | None = None, big_file_mb: int = 0) -> tuple[Daemon, dict]:
    """TFTP, NBD and HTTP on free loopback ports; one published image; returns (daemon, ports)."""
    config = write_config(
        tmp, inventory={"devices": [{"mac": "52:54:00:00:00:01", "hostname": "legit"}]},
        images={"dir": "../images", "settle_seconds": 0, "rescan_interval": 30, "default": IMAGE},
        tftp={"enabled": True, **(tftp or {})}, nbd={"enabled": True, **(nbd or {})},
        http={"enabled": True, **(http or {})})
    (tmp / "tftp" / "pxelinux.0").write_bytes(os.urandom(300_000))
    if big_file_mb:
        with open(tmp / "tftp" / "big.bin", "wb") as f:
            for _ in range(big_file_mb):
                f.write(os.urandom(1 << 20))
    build_image(tmp / "images" / f"{IMAGE}.img", extra={"/filler": os.urandom(image_mb << 20)})
    import yaml
    data = yaml.safe_load(config.read_text())
    ports = {name: int(data[name]["listen"].rsplit(":", 1)[1]) for name in ("tftp", "nbd", "http")}
    daemon = Daemon(config)
    try:
        daemon.wait_for("bootserverd started", timeout=20)
        daemon.wait_for(f"image {IMAGE} published", timeout=20)
    except Exception:
        daemon.stop()
        raise
    return daemon, ports


def log_lines(daemon: Daemon) -> list[str]:
    """Every line the daemon wrote so far (the harness only keeps what wait_for read)."""
    import queue
    while True:
        try:
            line = daemon._queue.get_nowait()
        except queue.Empty:
            return daemon.lines
        if line is not None:
            daemon.lines.append(line)


def established(port: int) -> int:
    """Server-side ESTABLISHED TCP connections on a local port (from /proc/net/tcp)."""
    count = 0
    hexport = f"{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(":" + hexport) and fields[3] == "01":
            count += 1
    return count


def connect_from(host: str, port: int, timeout: float = 5.0) -> socket.socket:
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((host, 0))
    s.connect(("127.0.0.1", port))
    return s


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
