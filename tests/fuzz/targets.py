"""The fuzz targets (tests/fuzz/fuzz_TARGET.py) and one atheris run of one, in a child process
(run.py): shared by the short run of make test (test_fuzz_short.py) and the long one (campaign.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.fuzz import harness

TARGETS = ("dhcp", "tftp", "nbd", "http", "config", "ldap")
RUN = Path(__file__).resolve().parent / "run.py"
ROOT = Path(__file__).resolve().parents[2]


def run_target(target: str, scratch: Path, runs: int, seconds: float, timeout: float):
    """One atheris run; returns (exit status, runs done, crash files, output tail)."""
    scratch.mkdir(parents=True, exist_ok=True)
    artifacts = scratch.parent / f"{target}-artifacts"
    artifacts.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(RUN), target, f"-runs={runs}", f"-max_total_time={int(seconds) or 1}",
         "-max_len=12000", "-timeout=10", f"-artifact_prefix={artifacts}/", "-print_final_stats=1",
         str(scratch), str(harness.CORPUS / target)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    out = proc.stderr + proc.stdout
    done = 0
    for line in out.splitlines():
        if line.startswith("Done ") and " runs in " in line:
            done = int(line.split()[1])
    crashes = sorted(p.name for p in artifacts.iterdir())
    return proc.returncode, done, crashes, out[-3000:]
