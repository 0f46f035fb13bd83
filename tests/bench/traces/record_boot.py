"""Record the NBD read trace of the real Debian image booting to multi-user (the e2e lab).

    sudo .venv/bin/python tests/bench/traces/record_boot.py [--out tests/bench/traces/debian12-boot.trace]

The e2e image (tests/e2e/debian_image.py, built once and cached) boots in qemu (TCG, BIOS,
1 GiB, one vCPU) through bootserverd alone (tests/e2e/harness.py BootLab): iPXE, kernel and
initrd over HTTP, Debian's initramfs mounting its root over NBD. The daemon records the next
session of the image (nbd.trace.images, set by SIGHUP once the lab is up); when the guest
prints the multi-user marker the daemon is stopped, which writes the trace of the session still
open, and the requests after the marker are cut (the kept trace is "connect → multi-user").
Holds /tmp/bootserverd-bench.lock (qemu shares the two cores with everyone).
"""

from __future__ import annotations

import argparse
import calendar
import fcntl
import signal
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
sys.path.insert(0, str(ROOT))

import yaml

from nbd.trace import parse
from tests.e2e.debian_image import FAILURES, MARKER, debian_image
from tests.e2e.harness import BootLab


def record(out: Path, timeout: float) -> None:
    image = debian_image()
    with tempfile.TemporaryDirectory(prefix="bootserverd-trace-") as tmp, BootLab(Path(tmp), image.path,
                                                                                 image.name) as lab:
        settings = yaml.safe_load(lab.config.read_text())
        settings["nbd"]["trace"] = {"images": [{"image": image.name, "sessions": 1}], "max_seconds": 3600}
        lab.config.write_text(yaml.safe_dump(settings, sort_keys=False))
        lab.daemon.signal(signal.SIGHUP)
        lab.daemon.wait_for("SIGHUP: configuration", timeout=30)
        result = lab.boot(timeout=timeout, firmware="bios", memory=1024, markers=(MARKER,), failures=FAILURES)
        marker_wall = time.time()
        if result.marker is None:
            raise SystemExit("no multi-user marker:\n" + lab.explain(result))
        lab.daemon.stop()
        traces = sorted((Path(tmp) / "state" / "nbd-traces").glob("*.trace"))
        if len(traces) != 1:
            raise SystemExit(f"expected one trace, found {traces}:\n{lab.daemon.log()}")
        text = traces[0].read_text()
    trace = parse(text)
    started = trace.header["started"]         # 2026-12-02T07:59:58.125Z
    connect_wall = calendar.timegm(time.strptime(started[:19], "%Y-%m-%dT%H:%M:%S")) + int(started[20:23]) / 1000
    cut = marker_wall - connect_wall
    lines, kept, dropped = [], 0, 0
    for line in text.splitlines():
        if line.startswith("#"):
            if line.startswith("# ended:"):
                line = f"# ended: cut at the multi-user marker, {cut:.3f} s after the connect"
            elif line.startswith("# requests:"):
                line = f"# requests: {kept} kept ({dropped} after the marker removed)"
            elif line.startswith("# client:"):
                line = line + f"  (qemu TCG, BIOS + iPXE, {image.name}, {result.seconds:.1f} s power-on to marker)"
            lines.append(line)
        elif float(line.split()[0]) <= cut:
            lines.append(line)
            kept += 1
        else:
            dropped += 1
    lines.insert(-2, "# recorded by tests/bench/traces/record_boot.py (see tests/bench/traces/README.md)")
    out.write_text("\n".join(lines) + "\n")
    s = parse(out.read_text()).summary()
    print(f"{out}: {s['requests']} requests, {s['reads']} reads, {s['read_bytes'] / 1e6:.1f} MB read, "
          f"{s['distinct_bytes'] / 1e6:.1f} MB distinct, {s['seconds']:.1f} s; marker {result.seconds:.1f} s "
          f"after power-on")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "debian12-boot.trace")
    ap.add_argument("--timeout", type=float, default=400)
    args = ap.parse_args()
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        record(args.out, args.timeout)


if __name__ == "__main__":
    main()
