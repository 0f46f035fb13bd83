#!/usr/bin/env python3
"""Status page benchmark (issue 18: ≤ 50 ms for 2,000 devices, without stalling the reactor).

1. Render cost: the page code (services/http/ui, UiResource.page) over a model of 2,000 devices
   and a boot report of their morning storm (tests/support/classroom.py: 2,000 boots through
   the report's real hooks, 4 % stopped), median, p90 and max of 30 renders per page.
2. Served: the daemon as shipped (HTTP only, a YAML inventory of 2,000 devices) answers `/` and
   `/ui/devices` over loopback, one request at a time, against nginx 1.22 serving the very same
   bytes as static files: median and p99 latency and the ratio. A serial client, so the figure is
   the server's time per page plus loopback.
3. Reactor stall: a tiny request (`/v1/devices/<unknown>`, 404) timed while another client loads
   `/ui/devices` back to back, against the same request with the page idle.

Holds /tmp/bootserverd-bench.lock while measuring (one benchmark at a time on this machine).
"""

from __future__ import annotations

import fcntl
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
from services.http.ui.resource import UiResource  # noqa: E402
from tests.support.classroom import Clock, inventory, mac, morning  # noqa: E402
from tests.support.http import Daemon  # noqa: E402
from tests.support.nginx import start_nginx, stop  # noqa: E402

LOCK = "/tmp/bootserverd-bench.lock"
DEVICES = 2000
PAGES = {"overview": [], "devices": ["devices"], "device": ["device", mac(7)], "images": ["images"],
         "health": ["health"]}


def render_cost() -> None:
    clock = Clock()
    inv = inventory(DEVICES)
    report, _ = morning(inv, clock)
    image = SimpleNamespace(summary=lambda: {"name": "bullseye", "size": 1 << 32, "sha256": "ab" * 32})
    service = SimpleNamespace(reactor=SimpleNamespace(seconds=clock), model=SimpleNamespace(inventory=inv),
                              boot_report=report, images=SimpleNamespace(published=lambda: [image]),
                              diffs=SimpleNamespace(status=lambda: {"cached_bytes": 0}),
                              device_resource=SimpleNamespace(reports={}), kernel_exposures=dict)
    ui = UiResource(service, lambda: (), lambda: {"services": {}, "directory": {"source": "yaml"}})
    print(f"\n## 1. Render cost, {DEVICES} devices with a boot each (UiResource.page, in process)")
    print(f"  {'page':10} {'median ms':>10} {'p90 ms':>8} {'max ms':>8} {'bytes':>9}")
    for name, parts in PAGES.items():
        times, size = [], 0
        for _ in range(30):
            start = time.perf_counter()
            size = len(ui.page(parts, {}))
            times.append((time.perf_counter() - start) * 1000)
        times.sort()
        print(f"  {name:10} {statistics.median(times):10.1f} {p(times, .9):8.1f} {max(times):8.1f} {size:9d}"
              "   (target ≤ 50 ms)")


def fetch(url: str) -> tuple[float, bytes]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
    return (time.perf_counter() - start) * 1000, body


def latencies(url: str, n: int) -> list[float]:
    return sorted(fetch(url)[0] for _ in range(n))


def p(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def served(work: Path) -> None:
    lines = ["devices:"] + [f"  - {{mac: \"{mac(i)}\", hostname: pc{i}, type: thinclient}}" for i in range(DEVICES)]
    images = work / "images"
    images.mkdir()
    daemon = Daemon(work / "d", images, inventory="\n".join(lines) + "\n")
    static = work / "static"
    static.mkdir()
    nginx = None
    try:
        daemon.wait(lambda: daemon.json("/status")["devices"] == DEVICES, 30, "inventory loaded")
        urls = {"/": "index.html", "/ui/devices": "devices.html"}
        for path, name in urls.items():
            (static / name).write_bytes(fetch(daemon.url(path))[1])
        nginx, port = start_nginx(static, work)
        print(f"\n## 2. Served over loopback, {DEVICES} devices (no boots yet), 200 serial requests each")
        print(f"  {'page':12} {'bootserverd p50':>16} {'p99':>7} {'nginx p50':>10} {'p99':>7} {'ratio p50':>10}")
        for path, name in urls.items():
            ours = latencies(daemon.url(path), 200)
            theirs = latencies(f"http://127.0.0.1:{port}/{name}", 200)
            print(f"  {path:12} {p(ours, .5):13.1f} ms {p(ours, .99):7.1f} {p(theirs, .5):7.1f} ms "
                  f"{p(theirs, .99):7.1f} {p(ours, .5) / p(theirs, .5):10.1f}")
        probe = daemon.url("/v1/devices/52:54:ff:ff:ff:ff")

        def tiny(n: int) -> list[float]:
            out = []
            for _ in range(n):
                start = time.perf_counter()
                try:
                    urllib.request.urlopen(probe, timeout=30)
                except urllib.error.HTTPError:
                    pass
                out.append((time.perf_counter() - start) * 1000)
                time.sleep(0.005)
            return sorted(out)

        idle = tiny(200)
        stop_load = threading.Event()
        pages = [0]

        def load() -> None:
            while not stop_load.is_set():
                fetch(daemon.url("/ui/devices"))
                pages[0] += 1

        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        busy = tiny(200)
        stop_load.set()
        loader.join(30)
        print("\n## 3. Reactor stall: a tiny request (404) while /ui/devices is loaded back to back")
        print(f"  idle:  p50 {p(idle, .5):6.1f} ms  p99 {p(idle, .99):6.1f} ms  max {idle[-1]:6.1f} ms")
        print(f"  busy:  p50 {p(busy, .5):6.1f} ms  p99 {p(busy, .99):6.1f} ms  max {busy[-1]:6.1f} ms"
              f"   ({pages[0]} pages served meanwhile)")
    finally:
        if nginx is not None:
            stop(nginx)
        daemon.stop()


def main() -> None:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"# status page benchmark — nproc {os.cpu_count()}, {cpu}, kernel {os.uname().release}")
    with open(LOCK, "w") as lock, tempfile.TemporaryDirectory() as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        render_cost()
        served(Path(tmp))


if __name__ == "__main__":
    main()
