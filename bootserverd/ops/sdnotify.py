"""systemd's notify protocol without a dependency: readiness (Type=notify) and the
file-descriptor store (FileDescriptorStoreMax=), through which sockets outlive a restart.

Each call is one datagram to $NOTIFY_SOCKET; all are no-ops (False) when systemd did not start
us, and never raise: a notify that fails must not take the daemon down. Fds handed back by
systemd come in LISTEN_FDS/LISTEN_FDNAMES from fd 3 on (``inherited_fds``), matched by name,
never by position (systemd's order is arbitrary).
"""

from __future__ import annotations

import array
import fcntl
import os
import socket

LISTEN_FDS_START = 3
MAX_FDS_PER_MESSAGE = 253        # the kernel's SCM_MAX_FD


def _address() -> str | None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    return "\0" + address[1:] if address.startswith("@") else address   # abstract namespace


def available() -> bool:
    return _address() is not None


def _send(state: str, fds: list[int] | None = None) -> bool:
    address = _address()
    if address is None:
        return False
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendmsg([state.encode()], ancillary, 0, address)
    except OSError:
        return False
    return True


def notify(state: str) -> bool:
    """Send e.g. "READY=1" to $NOTIFY_SOCKET; False when not run by systemd (or it failed)."""
    return _send(state)


def valid_fdname(name: str) -> bool:
    return 0 < len(name) <= 255 and name.isascii() and name.isprintable() and ":" not in name


def store_fds(name: str, fds: list[int], poll: bool = False) -> bool:
    """Keep ``fds`` in the service's fd store under ``name``. ``poll=False`` (FDPOLL=0): systemd
    keeps them even when they hang up; we remove them ourselves (``remove_fds``)."""
    if not valid_fdname(name) or not fds or len(fds) > MAX_FDS_PER_MESSAGE:
        raise ValueError(f"cannot store {len(fds)} fds as {name!r}")
    return _send("FDSTORE=1\nFDNAME=" + name + ("" if poll else "\nFDPOLL=0"), fds)


def remove_fds(name: str) -> bool:
    """Close every fd stored under ``name`` (systemd holds copies: without this a connection we
    closed would stay open to its client)."""
    return _send("FDSTOREREMOVE=1\nFDNAME=" + name)


def inherited_fds(environ=None) -> dict[str, list[int]]:
    """The fds systemd passed to this process, by name, in the order given; empty when none
    are for us (LISTEN_PID is another process's). Each is made close-on-exec, and the
    variables are removed so that our children do not take the fds for theirs."""
    env = os.environ if environ is None else environ
    try:
        pid, count = int(env.get("LISTEN_PID", "")), int(env.get("LISTEN_FDS", ""))
    except ValueError:
        return {}
    names = env.get("LISTEN_FDNAMES", "").split(":")
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)
    if pid != os.getpid() or count <= 0:
        return {}
    out: dict[str, list[int]] = {}
    for i in range(count):
        fd = LISTEN_FDS_START + i
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
        except OSError:
            continue
        out.setdefault(names[i] if i < len(names) and names[i] else "unknown", []).append(fd)
    return out
