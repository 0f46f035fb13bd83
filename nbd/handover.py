"""What a restarted daemon needs to go on serving a connection it did not open (pure).

Under systemd, each connection in transmission is kept in the service's file-descriptor store
(services/nbd.py): its socket, its export's file and a ``SessionState`` written when the client
chose the export. When the daemon stops for a restart it stops reading, lets the answers
already queued reach the socket, and adds a ``Handover``: the bytes of a request it had read
only in part. The next process rebuilds the connection from these and carries on; the client
sees a pause. A crash leaves no Handover: a connection is then resumed only if nothing was
read and left unanswered, which ``SessionState`` cannot tell — see services/nbd.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .exports import OpenExport

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

    @classmethod
    def of(cls, export: OpenExport, tx, options, client: str) -> "SessionState":
        """The state of a connection in transmission (``tx``: its nbd.transmission.Transmission)."""
        return cls(export.name, export.size, tx.structured, dict(tx.contexts), tuple(options), client,
                   export.description)

    def encode(self) -> bytes:
        return json.dumps({"kind": STATE, "export": self.export, "size": self.size,
                           "structured": self.structured,
                           "contexts": {str(k): v for k, v in self.contexts.items()},
                           "options": list(self.options), "client": self.client,
                           "description": self.description}).encode()


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
                                str(doc.get("description", "")))
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


@dataclass(frozen=True)
class Resumed:
    """A connection another process of ours served: go on in transmission."""
    export: OpenExport
    state: SessionState
    handover: Handover | None      # None: that process crashed
    fd_group: str                  # its name in the fd store
