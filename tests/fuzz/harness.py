"""Shared plumbing of the fuzz targets (stdlib only: imported before any project module).

A target module defines ``one_input(data: bytes)`` (raises only on a real bug) and imports
the project code it exercises inside ``instrumented(...)``, so that under atheris the
coverage of exactly those packages guides the fuzzer. ``run.py`` drives atheris;
``replay`` feeds a corpus through a target without it (the unit-speed check in make test).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
FUZZING = False          # set by run.py before a target is imported


def instrumented(*packages: str):
    """Instrument imports of ``packages`` when atheris runs, else do nothing."""
    if not FUZZING:
        return contextlib.nullcontext()
    import atheris
    return atheris.instrument_imports(include=list(packages))


def corpus_files(target: str) -> list[Path]:
    directory = CORPUS / target
    return sorted(p for p in directory.iterdir() if p.is_file()) if directory.is_dir() else []


def replay(target: str, one_input) -> int:
    """Every corpus input through ``one_input``; returns how many ran."""
    files = corpus_files(target)
    for path in files:
        one_input(path.read_bytes())
    return len(files)


class Fdp:
    """A tiny FuzzedDataProvider that also works without atheris (for replay and hypothesis):
    consumes bytes from the front, returns zeros/empties once they run out."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int(self, nbytes: int) -> int:
        return int.from_bytes(bytes(self.byte() for _ in range(nbytes)), "big")

    def pick(self, items):
        return items[self.byte() % len(items)]

    def bytes(self, limit: int) -> bytes:
        n = self.int(2) if limit > 255 else self.byte()
        n = min(n % (limit + 1), self.remaining())
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def text(self, limit: int) -> str:
        return self.bytes(limit).decode("utf-8", "replace")

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out
