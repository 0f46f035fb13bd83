"""Comparing our images with the peer boot server's (two servers per school, pair.*). Pure.

Both servers should hold the same image files. The peer's `/images/` listing (JSON: name,
size, sha256 per published image) is compared with ours by name, size and sha256:
- missing: images we publish that the peer does not;
- differing: images both publish under one name with another size or sha256 (a file is
  immutable: the same name with other bytes is a copy gone wrong or one still being copied);
- only_on_peer: images the peer publishes that we do not (the peer reports them as missing).
`changes(before, after)` turns two comparisons into the log lines for what changed, so a poll
that finds the same state says nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Comparison:
    missing: tuple[str, ...] = ()
    differing: tuple[str, ...] = ()
    only_on_peer: tuple[str, ...] = ()
    equal: frozenset[str] = frozenset()             # images the same on both
    details: Mapping[str, str] = None               # differing name → what differs

    def as_dict(self) -> dict:
        return {"missing": list(self.missing), "differing": list(self.differing),
                "only_on_peer": list(self.only_on_peer), "same": len(self.equal)}


class ListingError(ValueError):
    """The peer's answer is not an image listing."""


def parse_listing(document: Any) -> dict[str, tuple[int, str]]:
    """The peer's /images/ JSON ({"images": [{"name", "size", "sha256", ...}]}) → name →
    (size, sha256)."""
    images = document.get("images") if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise ListingError("no \"images\" list")
    out = {}
    for entry in images:
        try:
            out[str(entry["name"])] = (int(entry["size"]), str(entry["sha256"]))
        except (KeyError, TypeError, ValueError):
            raise ListingError(f"an entry without name, size and sha256: {str(entry)[:100]}") from None
    return out


def compare(ours: Mapping[str, tuple[int, str]], theirs: Mapping[str, tuple[int, str]]) -> Comparison:
    missing = tuple(sorted(set(ours) - set(theirs)))
    only = tuple(sorted(set(theirs) - set(ours)))
    differing, details = [], {}
    for name in sorted(set(ours) & set(theirs)):
        (size, sha), (peer_size, peer_sha) = ours[name], theirs[name]
        if size != peer_size:
            details[name] = f"{peer_size} bytes there, {size} here"
        elif sha != peer_sha:
            details[name] = f"sha256 {peer_sha[:12]}… there, {sha[:12]}… here"
        else:
            continue
        differing.append(name)
    equal = frozenset(set(ours) & set(theirs)) - set(differing)
    return Comparison(missing, tuple(differing), only, equal, details)


def changes(before: Comparison | None, after: Comparison) -> list[tuple[str, str]]:
    """(level, line) for each image whose state changed between two comparisons (before None:
    the first comparison, which names every missing and differing image)."""
    old = before or Comparison(details={})
    lines: list[tuple[str, str]] = []
    for name in after.missing:
        if name not in old.missing:
            lines.append(("warn", f"image {name} is missing on the peer"))
    for name in after.differing:
        if name not in old.differing or (old.details or {}).get(name) != after.details[name]:
            lines.append(("warn", f"image {name} differs on the peer ({after.details[name]})"))
    for name in after.only_on_peer:
        if name not in old.only_on_peer:
            lines.append(("info", f"image {name} is on the peer only"))
    now_bad = set(after.missing) | set(after.differing) | set(after.only_on_peer)
    for name in sorted(set(old.missing) | set(old.differing) | set(old.only_on_peer)):
        if name not in now_bad:
            lines.append(("info", f"image {name} is now the same on the peer" if name in after.equal
                          else f"image {name} is now on neither server"))
    return lines
