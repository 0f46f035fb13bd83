#!/usr/bin/env python3
"""Run one fuzz target under atheris (libFuzzer): python tests/fuzz/run.py TARGET [libFuzzer args].

TARGET is dhcp, tftp, nbd, http, config or ldap (module tests/fuzz/fuzz_TARGET.py). Pass a
scratch corpus directory first and tests/fuzz/corpus/TARGET after it, so that new inputs go
to the scratch one and the repository's corpus stays small:
    run.py dhcp -runs=1000000 -artifact_prefix=/tmp/crash- /tmp/scratch tests/fuzz/corpus/dhcp
Exit status 0: no crash; a crash leaves the input at the artifact prefix.
"""

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import atheris  # noqa: E402

from tests.fuzz import harness  # noqa: E402


def main() -> None:
    target = sys.argv[1]
    harness.FUZZING = True
    module = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    atheris.Setup([sys.argv[0], *sys.argv[2:]], module.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
