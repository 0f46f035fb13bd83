#!/usr/bin/env python3
"""The long fuzz run of `make reliability`: every target for 10^6 inputs (or $FUZZ_RUNS),
new inputs kept in a scratch corpus, crashes left in the scratch dir and counted.

    python tests/fuzz/campaign.py [SCRATCH_DIR] [TARGET ...]

Records one figure table (tests/reliability/figures.py) and exits 1 if anything crashed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import TARGETS, run_target  # noqa: E402
from tests.reliability import figures  # noqa: E402


def main() -> int:
    args = sys.argv[1:]
    scratch = Path(args.pop(0)) if args else Path(tempfile.mkdtemp(prefix="bootserverd-fuzz-"))
    targets = args or list(TARGETS)
    runs = int(os.environ.get("FUZZ_RUNS", 10**6))
    rows, total_crashes = [], 0
    for target in targets:
        started = time.monotonic()
        code, done, crashes, tail = run_target(target, scratch / target, runs, 6 * 3600, 7 * 3600)
        seconds = time.monotonic() - started
        total_crashes += len(crashes) + (code != 0 and not crashes)
        verdict = "0 crashes" if code == 0 and not crashes else f"CRASH {crashes or tail[-300:]}"
        rows.append((f"fuzz_{target}", f"{done:,} inputs in {seconds:.0f} s "
                     f"({done / max(seconds, 1e-9):,.0f}/s): {verdict}"))
        print(f"{target}: {rows[-1][1]}", flush=True)
    figures.record("fuzz", "Fuzzing (atheris, coverage-guided)", rows,
                   "Targets in tests/fuzz/fuzz_*.py, seeds in tests/fuzz/corpus/. Crashes found while "
                   "the targets were written are fixed and kept as tests in the unit test file of the module "
                   "they hit (each with its story in a comment) and as corpus files; see docs/security.md.", full=runs >= 10**6)
    return 1 if total_crashes else 0


if __name__ == "__main__":
    sys.exit(main())
