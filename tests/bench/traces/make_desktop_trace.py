"""A desktop-sized SYNTHETIC boot trace from the real one (tests/bench/traces/README.md).

    python tests/bench/traces/make_desktop_trace.py [--real debian12-boot.trace]
        [--image-size 4GiB] [--read 300MB] [--out desktop-synthetic.trace]

The real trace (Debian 12 minimal to multi-user) reads ~16 MB; a school desktop image reads
hundreds of MB at boot and login. This repeats the real pattern k times (k = read / the real
trace's read bytes, rounded up) over an image of ``--image-size``: the image is cut into k
slots, copy j of the pattern reads slot j at the real offsets (scaled down if a slot is smaller
than the real image), and the copies are merged by their time since connect — so a client reads
k regions in interleaved phases with the real trace's request sizes (kernel readahead-sized),
one request in flight. Deterministic: the same inputs give the same file.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from nbd.trace import distinct_bytes, parse

ALIGN = 4096


def size(text: str) -> int:
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if text.endswith(unit):
            return int(float(text[:-len(unit)]) * factor)
    return int(text)


def make(real_path: Path, image_size: int, target: int) -> str:
    real = parse(real_path.read_text())
    reads = real.reads
    real_bytes = sum(r.length for r in reads)
    real_extent = max(r.offset + r.length for r in reads)
    k = max(1, math.ceil(target / real_bytes))
    slot = image_size // k // ALIGN * ALIGN
    scale = min(1.0, (slot - max(r.length for r in reads)) / real_extent)
    rows = []
    for j in range(k):
        for i, r in enumerate(reads):
            offset = j * slot + int(r.offset * scale) // ALIGN * ALIGN
            rows.append((r.seconds, i, j, offset, r.length))
    rows.sort()
    assert all(o + n <= image_size for *_, o, n in rows)
    out = ["# bootserverd nbd trace 1",
           f"# image: SYNTHETIC desktop ({image_size} bytes), from {real_path.name}",
           f"# client: synthetic ({k} copies of {real.header.get('image', '?')}'s boot pattern)",
           f"# started: {real.header.get('started', '?')}",
           f"# why: made by tests/bench/traces/make_desktop_trace.py --image-size {image_size} --read {target}",
           f"# synthetic: {k} slots of {slot} bytes, offsets scaled by {scale:.4f}, merged by time",
           "# fields: seconds-since-connect command offset length"]
    out += [f"{t:.6f} READ {o} {n}" for t, _, _, o, n in rows]
    out += ["# ended: synthetic", f"# requests: {len(rows)} recorded, 0 not recorded (synthetic)"]
    text = "\n".join(out) + "\n"
    s = parse(text).summary()
    assert s["distinct_bytes"] == distinct_bytes((o, n) for *_, o, n in rows)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real", type=Path, default=HERE / "debian12-boot.trace")
    ap.add_argument("--image-size", type=size, default=size("4GiB"))
    ap.add_argument("--read", type=size, default=size("300MB"))
    ap.add_argument("--out", type=Path, default=HERE / "desktop-synthetic.trace")
    args = ap.parse_args()
    args.out.write_text(make(args.real, args.image_size, args.read))
    s = parse(args.out.read_text()).summary()
    print(f"{args.out}: {s['reads']} reads, {s['read_bytes'] / 1e6:.0f} MB read, "
          f"{s['distinct_bytes'] / 1e6:.0f} MB distinct (synthetic)")


if __name__ == "__main__":
    main()
