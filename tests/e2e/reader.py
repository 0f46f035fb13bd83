"""The Debian guest's reader lines (tests/e2e/debian_image.py READER), as the restart, reconnect
and failover tests follow them: rounds read, when they came, what went wrong."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from tests.e2e.debian_image import READER
from tests.e2e.harness import Qemu

OK = re.compile(rf"{READER} ok (\d+) (\d+) longest_read_ms=(\d+)")


@dataclass
class Round:
    at: float            # host monotonic time the line arrived
    number: int
    bytes: int
    longest_ms: int      # the longest single file read of the round (guest clock)


def parse(guest: Qemu) -> list[Round]:
    return [Round(at, int(m[1]), int(m[2]), int(m[3])) for at, line in list(guest.stamped) if (m := OK.search(line))]


def rounds(guest: Qemu, since: float, count: int, timeout: float,
           errors: Callable[[Qemu], list[str]]) -> list[Round]:
    """The reader's rounds reported after ``since``, once ``count`` of them came (or ``errors``
    found one, or qemu ended, or ``timeout`` passed: then fewer)."""
    deadline = time.monotonic() + timeout
    while True:
        after = [r for r in parse(guest) if r.at > since]
        if len(after) >= count or errors(guest) or guest.proc.poll() is not None or time.monotonic() > deadline:
            return after
        time.sleep(0.2)
