#!/usr/bin/env python3
"""Reading a kernel/initrd out of a squashfs: `unsquashfs -cat` against PySquashfsImage.

Builds images with an incompressible 32 MiB file (real initrds are already compressed) and a
compressible 8 MiB text file, extracts each into a file 5 times with both, prints median ms and the ratio.
PySquashfsImage is installed into a temp dir for the run (it is not a dependency).
"""

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.support.images import build_image  # noqa: E402


def median_ms(function, runs=5):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp / "lib"),
                        "PySquashfsImage", "zstandard"], check=True)
        sys.path.insert(0, str(tmp / "lib"))
        from PySquashfsImage import SquashFsImage
        text = b"".join(b"line %d of a compressible initrd\n" % i for i in range(260_000))
        cases = {"incompressible 32 MiB": os.urandom(32 << 20), "compressible 8 MiB": text[:8 << 20]}
        print(f"{'case':24} {'unsquashfs -cat':>16} {'PySquashfsImage':>16} {'ratio':>6}")
        for label, initrd in cases.items():
            image = build_image(tmp / "bench.img", initrd=initrd)
            inner = "boot/initrd.img-6.1.0-18-amd64"

            target = tmp / "extracted"

            def with_unsquashfs():   # as bootserverd.images.squashfs.cat does: stdout straight into the file
                with open(target, "wb") as out:
                    subprocess.run(["unsquashfs", "-cat", str(image), inner], stdout=out, check=True)
                assert target.stat().st_size == len(initrd)

            def with_pysquashfs():
                with SquashFsImage.from_file(str(image)) as fs, open(target, "wb") as out:
                    out.write(fs.select("/" + inner).read_bytes())
                assert target.stat().st_size == len(initrd)

            a, b = median_ms(with_unsquashfs), median_ms(with_pysquashfs)
            print(f"{label:24} {a:13.1f} ms {b:13.1f} ms {b / a:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
