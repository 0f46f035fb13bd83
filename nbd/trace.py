"""NBD request traces, pure: which sessions to record, the recorder, and the text format.

A trace is what one session asked for — every request's time since connect, command, offset
and length — kept to replay a real boot against servers (tests/bench/storm_bench.py) and, later,
to learn an image's boot working set. Off by default; when on, bounded: at most
``max_requests`` lines per trace (the rest only counted), the first ``max_seconds`` of a
session (a client that never disconnects — a thin client runs all day — is written then), and
``keep`` trace files (the writer, nbd/tracefile.py, removes the oldest).

The text format (one request per line, ``#`` lines are the header and footer)::

    # bootserverd nbd trace 1
    # image: debian-12
    # client: 10.0.0.23:40312
    # mac: 52:54:00:12:34:56
    # started: 2026-12-02T07:59:58.120Z
    # fields: seconds-since-connect command offset length
    0.000412 READ 0 4096
    0.000977 READ 4096 126976
    ...
    # ended: session closed
    # requests: 1293 recorded, 0 not recorded (max_requests 100000)

No clock, file or socket here: the adapter passes ``now`` and the wall-clock start.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from . import codec as c

VERSION = 1
DIRNAME = "nbd-traces"              # under server.state_dir
SUFFIX = ".trace"
MAX_REQUESTS = 100_000              # defaults of nbd.trace.max_requests / max_seconds / keep_files
MAX_SECONDS = 600.0
KEEP_FILES = 50

COMMANDS = {c.CMD_READ: "READ", c.CMD_WRITE: "WRITE", c.CMD_DISC: "DISC", c.CMD_FLUSH: "FLUSH",
            c.CMD_TRIM: "TRIM", c.CMD_CACHE: "CACHE", c.CMD_WRITE_ZEROES: "WRITE_ZEROES",
            c.CMD_BLOCK_STATUS: "BLOCK_STATUS"}
_NUMBERS = {name: cmd for cmd, name in COMMANDS.items()}


class TraceError(ValueError):
    """A trace file that is not in the format above (names the line)."""


@dataclass(frozen=True)
class ImageSessions:
    """Record the next ``sessions`` sessions that attach to export ``image``."""
    image: str
    sessions: int


@dataclass(frozen=True)
class TraceRules:
    """What to record (nbd.trace in the config). ``devices``: normalized MACs
    (aa:bb:cc:dd:ee:ff) or IPv4 addresses as text."""
    devices: frozenset[str] = frozenset()
    images: tuple[ImageSessions, ...] = ()
    max_requests: int = MAX_REQUESTS
    keep_files: int = KEEP_FILES
    max_seconds: float = MAX_SECONDS    # a session still open then is written as it is (a boot is over)

    @property
    def enabled(self) -> bool:
        return bool(self.devices) or any(i.sessions > 0 for i in self.images)


class TracePolicy:
    """Decides, when a session attaches to an export, whether it is recorded.

    "The next N sessions of an image" are counted from the start, and again from a reload that
    changes that image's N (a reload that leaves it alone keeps what is left)."""

    def __init__(self, rules: TraceRules = TraceRules()) -> None:
        self.rules = rules
        self.left: dict[str, int] = {i.image: i.sessions for i in rules.images}

    def reconfigure(self, rules: TraceRules) -> None:
        before = {i.image: i.sessions for i in self.rules.images}
        self.left = {i.image: (self.left.get(i.image, 0) if before.get(i.image) == i.sessions else i.sessions)
                     for i in rules.images}
        self.rules = rules

    def decide(self, host: str, mac: str | None, image: str) -> str | None:
        """Why this session is recorded ("device ...", "image ... (k of N)"), or None. Counts
        one of the image's sessions only when the device rule did not already pick it."""
        devices = self.rules.devices
        if devices and (host in devices or (mac is not None and mac in devices)):
            return f"device {mac if mac in devices else host}"
        left = self.left.get(image, 0)
        if left > 0:
            self.left[image] = left - 1
            total = next(i.sessions for i in self.rules.images if i.image == image)
            return f"image {image} ({total - left + 1} of {total})"
        return None


class Recorder:
    """One session's requests, bounded; ``add`` is on the hot path of a traced session only."""

    __slots__ = ("client", "dropped", "ended", "image", "mac", "max_requests", "reason", "rows", "started")

    def __init__(self, image: str, client: str, started: float, *, mac: str | None = None,
                 reason: str = "", max_requests: int = MAX_REQUESTS) -> None:
        """``started``: wall-clock seconds (epoch) of the connect, for the header only."""
        self.image, self.client, self.mac, self.started = image, client, mac, started
        self.reason, self.max_requests = reason, max_requests
        self.rows: list[tuple[float, int, int, int]] = []
        self.dropped = 0
        self.ended = "session closed"    # or why it was written while the session went on

    def add(self, since_connect: float, requests: Iterable[tuple[int, int, int, int, int]]) -> None:
        """``requests``: the parser's (flags, cmd, handle, offset, length) tuples, all read at
        ``since_connect`` seconds after the connect."""
        room = self.max_requests - len(self.rows)
        for _flags, cmd, _handle, offset, length in requests:
            if room > 0:
                self.rows.append((since_connect, cmd, offset, length))
                room -= 1
            else:
                self.dropped += 1

    def file_name(self) -> str:
        """Sorts by start time; the client and image make it readable in a listing."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.started))
        ms = int(self.started * 1000) % 1000
        host = self.client.rsplit(":", 1)[0]
        return f"{stamp}.{ms:03d}Z-{_safe(host)}-{_safe(self.image)}{SUFFIX}"

    def encode(self) -> str:
        return "".join(self.lines())

    def lines(self) -> Iterator[str]:
        yield f"# bootserverd nbd trace {VERSION}\n"
        yield f"# image: {self.image}\n"
        yield f"# client: {self.client}\n"
        if self.mac:
            yield f"# mac: {self.mac}\n"
        yield f"# started: {_iso(self.started)}\n"
        if self.reason:
            yield f"# why: {self.reason}\n"
        yield "# fields: seconds-since-connect command offset length\n"
        for t, cmd, offset, length in self.rows:
            yield f"{t:.6f} {COMMANDS.get(cmd, str(cmd))} {offset} {length}\n"
        yield f"# ended: {self.ended}\n"
        yield (f"# requests: {len(self.rows)} recorded, {self.dropped} not recorded "
               f"(max_requests {self.max_requests})\n")


@dataclass(frozen=True)
class Request:
    seconds: float
    command: str
    offset: int
    length: int


@dataclass
class Trace:
    """A parsed trace file: its header (key → text) and requests."""
    header: dict[str, str] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    @property
    def reads(self) -> list[Request]:
        return [r for r in self.requests if r.command == "READ"]

    def summary(self) -> dict[str, float | int | str]:
        """Requests, bytes read, distinct bytes read (the working set), duration."""
        reads = self.reads
        return {"image": self.header.get("image", "?"), "client": self.header.get("client", "?"),
                "started": self.header.get("started", "?"), "requests": len(self.requests),
                "reads": len(reads), "read_bytes": sum(r.length for r in reads),
                "distinct_bytes": distinct_bytes((r.offset, r.length) for r in reads),
                "seconds": self.requests[-1].seconds if self.requests else 0.0,
                "not_recorded": _not_recorded(self.header.get("requests", ""))}


_LINE = re.compile(r"^(\d+(?:\.\d+)?) ([A-Z_]+|\d+) (\d+) (\d+)$")


def parse(text: str) -> Trace:
    """The inverse of Recorder.encode; raises TraceError naming the line."""
    trace = Trace()
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# bootserverd nbd trace "):
        raise TraceError("line 1: not a bootserverd nbd trace (no '# bootserverd nbd trace' header)")
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition(":")
            if sep:
                trace.header[key.strip()] = value.strip()
            continue
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise TraceError(f"line {number}: expected 'SECONDS COMMAND OFFSET LENGTH', got {line!r}")
        cmd = m.group(2)
        trace.requests.append(Request(float(m.group(1)), COMMANDS.get(int(cmd), cmd) if cmd.isdigit() else cmd,
                                      int(m.group(3)), int(m.group(4))))
    return trace


def distinct_bytes(ranges: Iterable[tuple[int, int]]) -> int:
    """Bytes covered by the union of (offset, length) ranges."""
    total, end = 0, -1
    for offset, length in sorted(ranges):
        stop = offset + length
        if stop <= end:
            continue
        total += stop - max(offset, end)
        end = stop
    return total


def to_prune(names: Iterable[str], keep: int) -> list[str]:
    """Trace file names beyond the newest ``keep`` (names sort by start time)."""
    traces = sorted(n for n in names if n.endswith(SUFFIX))
    return traces[:max(0, len(traces) - keep)]


def _not_recorded(footer: str) -> int:
    m = re.search(r"(\d+) not recorded", footer)
    return int(m.group(1)) if m else 0


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)[:80] or "_"


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"
