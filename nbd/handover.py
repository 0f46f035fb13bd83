"""What a restarted daemon needs to go on serving a connection it did not open (pure).

Under systemd, each connection in transmission is kept in the service's file-descriptor store
(services/nbd.py): its socket, its export's file and a ``SessionState`` written when the client
chose the export. When the daemon stops for a restart it stops reading, lets the answers
already queued reach the socket, and adds a ``Handover``: the bytes of a request it had read
only in part. The next process rebuilds the connection from these and carries on; the client
sees a pause. A crash leaves no Handover: the connection's in-flight log (nbd.inflight) tells
the next process what was read and not yet answered.

An image file is kept once, under its own name (``file_group``), for all the connections that
read it (``KeptFiles`` counts them), not in each connection's group: a store without kcmp()
(systemd's same_fd() fallback) takes two opens of one file for the same fd and keeps only the
first, which left the other connections of a classroom without their image after a restart.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from .exports import OpenExport
from .inflight import Replay

STATE, HANDOVER = "nbd-session", "nbd-handover"


@dataclass(frozen=True)
class SessionState:
    export: str
    size: int
    structured: bool
    contexts: dict[int, str]
    options: tuple[str, ...]
    client: str                 # "host:port" as the first process saw it
    description: str = ""
    file: str = ""              # the image file's identity (OpenExport.file); "" from before it was kept apart

    @classmethod
    def of(cls, export: OpenExport, tx, options, client: str) -> "SessionState":
        """The state of a connection in transmission (``tx``: its nbd.transmission.Transmission)."""
        return cls(export.name, export.size, tx.structured, dict(tx.contexts), tuple(options), client,
                   export.description, export.file)

    def encode(self) -> bytes:
        return json.dumps({"kind": STATE, "export": self.export, "size": self.size,
                           "structured": self.structured,
                           "contexts": {str(k): v for k, v in self.contexts.items()},
                           "options": list(self.options), "client": self.client,
                           "description": self.description, "file": self.file}).encode()


@dataclass(frozen=True)
class Handover:
    buffered: bytes = b""       # a request read in part: fed to the new parser first
    skip: int = 0               # bytes of a WRITE payload still to discard
    unanswered: int = 0         # answers that could not be sent before the stop (then: not resumed)

    def encode(self) -> bytes:
        return json.dumps({"kind": HANDOVER, "buffered": self.buffered.hex(), "skip": self.skip,
                           "unanswered": self.unanswered}).encode()


class BadState(ValueError):
    pass


def decode(data: bytes) -> SessionState | Handover:
    """One stored state file's content; BadState when it is not one of ours."""
    try:
        doc = json.loads(data)
        kind = doc["kind"]
        if kind == STATE:
            return SessionState(str(doc["export"]), int(doc["size"]), bool(doc["structured"]),
                                {int(k): str(v) for k, v in doc["contexts"].items()},
                                tuple(str(o) for o in doc["options"]), str(doc["client"]),
                                str(doc.get("description", "")), str(doc.get("file", "")))
        if kind == HANDOVER:
            return Handover(bytes.fromhex(doc["buffered"]), int(doc["skip"]), int(doc["unanswered"]))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise BadState(f"not a stored NBD session: {e}") from None
    raise BadState(f"unknown kind {kind!r}")


def group_name(serial: int, pid: int) -> str:
    """The FDNAME of one connection's fds: unique across restarts (pid) and in a process (serial),
    because FDSTOREREMOVE removes every fd of a name."""
    return f"nbd-conn-{pid}-{serial}"


def is_connection_group(name: str) -> bool:
    return name.startswith("nbd-conn-")


FILE_GROUP = "nbd-file-"


def file_group(file: str) -> str:
    """The FDNAME of an image file (``OpenExport.file``) kept for the connections reading it."""
    return FILE_GROUP + file


def is_file_group(name: str) -> bool:
    return name.startswith(FILE_GROUP)


class KeptFiles:
    """Which image files are in the fd store and how many kept connections read each: a file
    is stored with its first reader and removed after its last."""

    def __init__(self) -> None:
        self.readers: Counter[str] = Counter()
        self.stored: set[str] = set()

    def hold(self, file: str) -> bool:
        """One more reader of ``file``; True when the file must be stored now."""
        self.readers[file] += 1
        if file in self.stored:
            return False
        self.stored.add(file)
        return True

    def release(self, file: str) -> bool:
        """One reader fewer; True when the file must be removed from the store now."""
        self.readers[file] -= 1
        if self.readers[file] > 0:
            return False
        del self.readers[file]
        self.stored.discard(file)
        return True

    def inherited(self, file: str) -> None:
        """A file the previous process stored (it is in the store already)."""
        self.stored.add(file)

    def prune(self) -> list[str]:
        """Stored files no connection reads (after an adoption), forgotten: remove them."""
        unread = sorted(f for f in self.stored if not self.readers[f])
        self.stored.difference_update(unread)
        return unread


@dataclass(frozen=True)
class Resumed:
    """A connection another process of ours served: go on in transmission."""
    export: OpenExport
    state: SessionState
    handover: Handover | None      # None: that process crashed
    fd_group: str                  # its name in the fd store
    consumed: int = 0              # how far the kernel says the client's stream was read
    written: int = 0               # and how far ours was written (nbd.tcpstate)
    replay: "Replay | None" = None # after a crash: the answers the dead process owed
