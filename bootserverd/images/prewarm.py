"""Prewarm planning, pure: what part of an image to bring into the page cache, and when.

An image's boot working set is brought into the page cache when the image is published and
again every day at ``images.prewarm.at`` (local time), so the 8:00 storm is served from memory.
What is read:

- the **whole image** when it fits in ``max_share`` of MemTotal, counting what the other
  published images already hold in the page cache (``budget``);
- else the **ranges the image's recorded boots read** (nbd/trace.py traces whose ``image:``
  header names it), in the order the boots first read them, cut at the budget;
- else, for a new version of a series with no trace of its own, the **previous version's traced
  ranges mapped by file** through both images' squashfs layouts (``map_by_file``: the files the
  old ranges fell in, then those files' extents in the new image, plus the new metadata tables
  when the old ranges touched the old ones);
- else nothing (the log line says why).

No clock, file or socket here: the I/O adapter (bootserverd/images/prewarmer.py) reads the
traces, the layouts, MemTotal and the residency and passes them in.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bootserverd.model.objects import parse_image_name
from nbd.trace import Trace

PAGE = 4096
METADATA = "<metadata>"          # the layout's pseudo-file: superblock and the inode/directory/... tables

Range = tuple[int, int]           # (offset, length)


@dataclass(frozen=True)
class Plan:
    image: str
    how: str                      # "whole", "traced", "mapped from <image>" or "none"
    ranges: tuple[Range, ...]     # sorted, merged, page-aligned, inside the image
    why: str = ""                 # for "none", and a note for the others (traces used, files mapped)

    @property
    def bytes(self) -> int:
        return sum(length for _, length in self.ranges)


# -- ranges --
def merge(ranges: Iterable[Range]) -> list[Range]:
    """The union of (offset, length) ranges, sorted; empty ranges dropped."""
    out: list[list[int]] = []
    for offset, length in sorted(r for r in ranges if r[1] > 0):
        end = offset + length
        if out and offset <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([offset, end])
    return [(start, end - start) for start, end in out]


def align(ranges: Iterable[Range], size: int, page: int = PAGE) -> list[Range]:
    """Ranges widened to whole pages and clipped to ``[0, size)``, merged."""
    out = []
    for offset, length in ranges:
        start = max(0, offset // page * page)
        end = min(size, -(-(offset + length) // page) * page)
        if end > start:
            out.append((start, end - start))
    return merge(out)


def total(ranges: Iterable[Range]) -> int:
    return sum(length for _, length in merge(ranges))


def first_bytes(ordered: Sequence[Range], budget: int, size: int) -> list[Range]:
    """The ranges, taken in the order given (first read first), until their union (in whole
    pages inside the image) would pass ``budget`` bytes, the range that crosses it cut; merged."""
    if total(align(ordered, size)) <= budget:
        return align(ordered, size)
    low, high = 0, len(ordered)             # the longest prefix that fits
    while low < high:
        mid = (low + high + 1) // 2
        if total(align(ordered[:mid], size)) <= budget:
            low = mid
        else:
            high = mid - 1
    taken = align(ordered[:low], size)
    left = (budget - total(taken)) // PAGE * PAGE
    if left > 0:                            # the head of the range that did not fit whole
        offset = ordered[low][0] // PAGE * PAGE
        cut = align([*taken, (offset, left)], size)
        if total(cut) <= budget:
            return cut
    return taken


def traced_reads(traces: Iterable[Trace], image: str) -> list[Range]:
    """The READ ranges of the traces of ``image``, in the order each trace read them (traces
    one after the other, as given: pass the newest first)."""
    out: list[Range] = []
    for trace in traces:
        if trace.header.get("image") != image:
            continue
        out.extend((r.offset, r.length) for r in trace.requests if r.command == "READ")
    return out


# -- the plan --
def budget(mem_total: int, max_share: float, held_by_others: int) -> int:
    """Bytes of page cache this image may take: ``max_share`` of MemTotal less what the other
    published images already hold."""
    return max(0, int(mem_total * max_share) - max(0, held_by_others))


def plan(image: str, size: int, room: int, traced: Sequence[Range] = (),
         mapped: tuple[str, Sequence[Range]] | None = None, note: str = "") -> Plan:
    """What to prewarm of ``image`` (``size`` bytes) with ``room`` bytes of budget. ``traced``:
    its recorded reads in first-read order; ``mapped``: (previous version, its ranges mapped
    into this image) when it has no trace of its own."""
    if size <= room:
        return Plan(image, "whole", ((0, size),) if size else (), note)
    if traced:
        return Plan(image, "traced", tuple(first_bytes(traced, room, size)), note)
    if mapped is not None and mapped[1]:
        return Plan(image, f"mapped from {mapped[0]}", tuple(first_bytes(mapped[1], room, size)), note)
    return Plan(image, "none", (), note or f"{size} bytes do not fit in the {room} bytes of the budget "
                                            "and no boot of it (or of its series) was recorded")


def previous_version(name: str, candidates: Iterable[str]) -> str | None:
    """The newest image of ``name``'s series (same arch) older than ``name``, among
    ``candidates`` (Puavo names ``<series>-<YYYY-MM-DD-HHMMSS>-<arch>`` sort by version)."""
    series, version, arch = parse_image_name(name)
    if series is None or version is None:
        return None
    older = []
    for other in candidates:
        s, v, a = parse_image_name(other)
        if s == series and a == arch and v is not None and v < version:
            older.append((v, other))
    return max(older)[1] if older else None


# -- mapping by file through the squashfs layouts --
@dataclass(frozen=True)
class Mapped:
    ranges: tuple[Range, ...]     # in the new image, in the order the old ranges reached them
    files: int                    # files (and the metadata) the old ranges touched
    missing: int                  # of those, how many the new image does not have


def map_by_file(old_ranges: Sequence[Range], old_layout: Mapping[str, Sequence[Range]],
                new_layout: Mapping[str, Sequence[Range]]) -> Mapped:
    """The files (paths, and ``METADATA``) whose extents in the old image the old ranges
    overlap, in first-touched order → those files' extents in the new image."""
    intervals = sorted((offset, offset + length, path) for path, extents in old_layout.items()
                       for offset, length in extents if length > 0)
    starts = [start for start, _, _ in intervals]
    longest = max((end - start for start, end, _ in intervals), default=0)
    touched: dict[str, None] = {}
    for offset, length in old_ranges:
        end = offset + length
        # an extent overlapping [offset, end) starts before end and after offset - longest
        i = bisect.bisect_left(starts, offset - longest)
        j = bisect.bisect_left(starts, end)
        for start, stop, path in intervals[i:j]:
            if stop > offset and path not in touched:
                touched[path] = None
    out: list[Range] = []
    missing = 0
    for path in touched:
        extents = new_layout.get(path)
        if extents is None:
            missing += 1
            continue
        out.extend(extents)
    return Mapped(tuple(out), len(touched), missing)


# -- when --
def parse_at(text: str) -> tuple[int, int]:
    """'07:15' → (7, 15); ValueError naming the problem."""
    hour, sep, minute = str(text).strip().partition(":")
    if not sep or not hour.isdigit() or not minute.isdigit() or len(minute) != 2:
        raise ValueError(f"must be a local time of day like \"07:15\", not {text!r}")
    h, m = int(hour), int(minute)
    if not (0 <= h <= 23 and 0 <= m <= 59):
        raise ValueError(f"{text!r} is not a time of day (00:00 to 23:59)")
    return h, m


def seconds_until(now: float, at: tuple[int, int],
                  localtime: Callable[[float], time.struct_time] = time.localtime,
                  mktime: Callable[[tuple], float] = time.mktime) -> float:
    """Seconds from epoch ``now`` to the next ``at`` (hour, minute) local time, strictly later
    than now (at most a day and an hour ahead across a DST change)."""
    t = localtime(now)
    for days in range(0, 3):
        when = mktime((t.tm_year, t.tm_mon, t.tm_mday + days, at[0], at[1], 0, 0, 0, -1))
        if when > now:
            return when - now
    return 86400.0       # not reached: mktime normalises the day
