"""The short fuzz run of make test: every corpus input replayed in-process, then each target
under atheris for a few seconds. `make reliability` runs 10^6 inputs each (campaign.py)."""

from __future__ import annotations

import importlib
import os

import pytest

from tests.fuzz import harness
from tests.fuzz.targets import TARGETS, run_target

SECONDS = float(os.environ.get("BOOTSERVERD_FUZZ_SECONDS", "2.5"))


@pytest.mark.parametrize("target", TARGETS)
def test_corpus_replays_cleanly(target):
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    assert harness.replay(target, module.one_input) >= 5     # small, but a real seed set


@pytest.mark.parametrize("target", TARGETS)
def test_short_atheris_run_finds_nothing(target, tmp_path):
    code, done, crashes, tail = run_target(target, tmp_path / "scratch", 10**6, SECONDS, 60)
    assert code == 0 and not crashes, tail
    assert done > 100, tail
