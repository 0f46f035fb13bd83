"""The sync cookie and the entries it describes, persisted together in one file.

Written atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves
either the old pair or the new one: a cookie without its entries would make a restart
resume "after" entries it no longer has. ``source`` records which replica and query the
pair belongs to; a snapshot of another one is still served while the replica is down, but
its cookie is not used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from bootserverd_client.fsutil import fsync_dir

FORMAT = 1
FILENAME = "ldap-snapshot.json"


class SnapshotError(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    source: Mapping[str, str]                       # uri, base, filter, profile
    cookie: str | None
    entries: Mapping[str, tuple[str, Mapping[str, tuple[str, ...]]]] = field(default_factory=dict)
    saved_at: float = 0.0                           # time.time() of the write


def write(path: Path, snapshot: Snapshot, chunk: int = 256) -> None:
    """Runs in the consumer thread: the entries are encoded a chunk at a time, because
    json's C encoder holds the GIL for a whole call and the reactor must keep running."""
    head = {"format": FORMAT, "source": dict(snapshot.source), "cookie": snapshot.cookie,
            "saved_at": snapshot.saved_at}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    items = list(snapshot.entries.items())
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            out.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"entries":{')
            for start in range(0, len(items), chunk):
                if start:
                    out.write(",")
                out.write(json.dumps(dict(items[start:start + chunk]), separators=(",", ":"))[1:-1])
            out.write("}}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        # a full disk: the half-written temporary must not keep the space the next try needs
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def read(path: Path) -> Snapshot | None:
    """None when there is no snapshot; SnapshotError when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path} is damaged (not UTF-8 at byte {exc.start})") from None
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise SnapshotError(f"{path}: unknown format {data.get('format')!r}")
        entries = {str(uuid): (str(dn), {str(k): tuple(map(str, v)) for k, v in attrs.items()})
                   for uuid, (dn, attrs) in data["entries"].items()}
        return Snapshot(source={str(k): str(v) for k, v in data["source"].items()},
                        cookie=data["cookie"], entries=entries, saved_at=float(data.get("saved_at", 0)))
    except SnapshotError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SnapshotError(f"{path} is damaged ({exc.__class__.__name__}: {exc})") from None
