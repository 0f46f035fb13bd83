#!/usr/bin/env python3
"""`make reliability`: the long runs, then docs/reliability.md from their figures.

  1. every fuzz target for 10^6 inputs (tests/fuzz/campaign.py; FUZZ_RUNS overrides);
  2. the flood and fault tests in full size (BOOTSERVERD_RELIABILITY=full), which also
     replay the fuzz corpora at the running daemon and check real clients afterwards.
The measuring part holds /tmp/bootserverd-bench.lock so benchmarks do not overlap it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.reliability import figures  # noqa: E402


def main() -> int:
    out = Path(tempfile.mkdtemp(prefix="bootserverd-figures-"))
    env = dict(os.environ, BOOTSERVERD_FIGURES=str(out), BOOTSERVERD_RELIABILITY="full",
               BOOTSERVERD_HYPOTHESIS_EXAMPLES="2000")
    with open("/tmp/bootserverd-bench.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        fuzz = subprocess.run([sys.executable, "tests/fuzz/campaign.py", str(out / "fuzz-scratch")],
                              cwd=ROOT, env=env)
        tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                "tests/reliability", "tests/fuzz/test_structured.py"], cwd=ROOT, env=env)
    figures.render(out, ROOT / "docs" / "reliability.md")
    print(f"figures in {out}; docs/reliability.md written")
    return fuzz.returncode or tests.returncode


if __name__ == "__main__":
    sys.exit(main())
