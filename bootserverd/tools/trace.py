"""``bootserverd trace list|show``: the NBD sessions recorded under server.state_dir
(nbd.trace in the config; nbd/trace.py has the format)."""

from __future__ import annotations

import sys
from pathlib import Path

from nbd.trace import DIRNAME, TraceError
from nbd.tracefile import listing, read


def trace_dir(state_dir: Path) -> Path:
    return Path(state_dir) / DIRNAME


def list_traces(state_dir: Path, out=sys.stdout) -> int:
    """One line per trace, oldest first: file, image, client, start, requests, MB read."""
    files = listing(trace_dir(state_dir))
    if not files:
        print(f"no NBD traces in {trace_dir(state_dir)} (nbd.trace in the config names what to record)", file=out)
        return 0
    print(f"{'TRACE':58}  {'IMAGE':24}  {'CLIENT':21}  {'REQUESTS':>8}  {'MB READ':>8}  SECONDS", file=out)
    for path in files:
        try:
            s = read(path).summary()
        except (TraceError, OSError, UnicodeDecodeError) as exc:
            print(f"{path.name:58}  unreadable: {exc}", file=out)
            continue
        print(f"{path.name:58}  {s['image']:24}  {s['client']:21}  {s['requests']:8}  "
              f"{s['read_bytes'] / 1e6:8.1f}  {s['seconds']:.1f}", file=out)
    return 0


def show_trace(state_dir: Path, name: str, summary: bool, out=sys.stdout) -> int:
    """The trace file as it is (a name from ``list``, a unique prefix of one, or a path), or with
    ``summary`` its totals: requests, bytes read, distinct bytes read (the working set)."""
    path = _find(trace_dir(state_dir), name)
    if path is None:
        print(f"bootserverd: no trace {name!r} in {trace_dir(state_dir)} (one name from `bootserverd trace list`)",
              file=sys.stderr)
        return 1
    if not summary:
        out.write(path.read_text(encoding="utf-8"))
        return 0
    try:
        s = read(path).summary()
    except TraceError as exc:
        print(f"bootserverd: {path}: {exc}", file=sys.stderr)
        return 1
    for key in ("image", "client", "started", "requests", "reads", "read_bytes", "distinct_bytes", "seconds",
                "not_recorded"):
        print(f"{key:15} {s[key]}", file=out)
    return 0


def _find(directory: Path, name: str) -> Path | None:
    given = Path(name)
    if given.is_file():
        return given
    matches = [p for p in listing(directory) if p.name == name or p.name.startswith(name)]
    exact = [p for p in matches if p.name == name]
    return exact[0] if exact else matches[0] if len(matches) == 1 else None
