"""The short fuzz run of make test: every corpus input replayed in-process, then each target
under atheris for a few seconds. `make reliability` runs 10^6 inputs each (campaign.py)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz import harness

TARGETS = ("dhcp", "tftp", "nbd", "http", "config", "ldap")
RUN = Path(__file__).resolve().parent / "run.py"
ROOT = Path(__file__).resolve().parents[2]
SECONDS = float(os.environ.get("BOOTSERVERD_FUZZ_SECONDS", "2.5"))


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_cleanly(target):
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    assert harness.replay(target, module.one_input) >= 5     # small, but a real seed set


def run_target(target: str, scratch: Path, runs: int, seconds: float, timeout: float):
    """One atheris run; returns (runs done, seconds, crash files, output tail)."""
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


@pytest.mark.parametrize("target", TARGETS)
def test_short_atheris_run_finds_nothing(target, tmp_path):
    code, done, crashes, tail = run_target(target, tmp_path / "scratch", 10**6, SECONDS, 60)
    assert code == 0 and not crashes, tail
    assert done > 100, tail
