"""What the NBD root is and how to get it back (pure: text in, decisions out).

``target(cmdline, net_conf)`` reads the kernel command line the way Debian's initramfs does
(nbd-client's ``local-top/nbd``: ``nbdroot=``, ``nbddev=``, ``root=/dev/nbd*``; a missing
server or path comes from DHCP, ``ROOTSERVER``/``ROOTPATH`` in klibc ipconfig's
``/run/net-<if>.conf``), so the helper reconnects to the very server address and export the
initramfs used, and reads its own settings:

    bootserverd.nbd_dead_timeout=SECONDS   the kernel holds I/O this long without a connection
                                           (NBD_ATTR_DEAD_CONN_TIMEOUT; default 900)
    bootserverd.nbd_timeout=SECONDS        a request unanswered this long marks the connection
                                           dead and is sent again on the next (NBD_ATTR_TIMEOUT;
                                           default 15; 0 leaves the kernel's setting)
    bootserverd.nbd_reconnect=0            no helper (the stock behaviour)

``retry_delay(attempt, jitter)`` is the backoff between connection attempts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PORT = 10809
DEFAULT_DEAD_TIMEOUT = 900      # s: a server reboot, a switch reboot; then the client is lost anyway
DEFAULT_TIMEOUT = 15            # s: far above a reply's time under a classroom storm
FIRST_DELAY = 0.25              # s: the first retry; the first attempt is at once
MAX_DELAY = 2.0                 # s: at most this long after the server is back
JITTER = 0.4                    # ± 20 %: a classroom does not come back in lockstep


class NoNbdRoot(Exception):
    """The command line names no NBD root (a disk boot): nothing to keep."""


@dataclass(frozen=True)
class Target:
    host: str            # as the initramfs had it: an address (a name is resolved before the lock)
    port: int
    export: str
    index: int           # /dev/nbd<index>
    dead_timeout: int    # s
    timeout: int         # s (0: leave the kernel's)

    @property
    def device(self) -> str:
        return f"/dev/nbd{self.index}"


def parse_net_conf(text: str) -> dict[str, str]:
    """klibc ipconfig's ``/run/net-<if>.conf``: KEY='value' lines (single-quoted, no escapes)."""
    found = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*(?:export\s+)?([A-Z0-9_]+)=(?:'([^']*)'|(\S*))\s*", line)
        if m:
            found[m[1]] = m[2] if m[2] is not None else m[3]
    return found


def _split_nbdroot(nbdroot: str) -> tuple[str, str, str, str]:
    """nbdroot's forms, split as local-top/nbd splits them → (server, port, path, device).
    As there, ``server:/path`` keeps the slash in the export name and ``server:port/path``
    does not."""
    parts = nbdroot.split(",")
    if len(parts) >= 3:                                   # server,path,device
        return parts[0], "", parts[-2], parts[-1]
    if len(parts) == 2:                                   # server,port: oldstyle, no export name
        return parts[0], parts[1], "", ""
    if nbdroot.startswith("[") and "]" in nbdroot:
        server = nbdroot[1:nbdroot.rindex("]")]
        rest = nbdroot[nbdroot.rindex("]") + 1:]
        rest = rest[1:] if rest.startswith(":") else rest
        if rest.startswith("/"):                          # [ipv6]:/path
            return server, "", rest, ""
        port, slash, path = rest.partition("/")           # [ipv6]:port/path
        return server, port, path if slash else rest, ""
    server = re.split(r"[:/]", nbdroot, maxsplit=1)[0]
    rest = nbdroot[len(server):]
    rest = rest[1:] if rest.startswith(":") else rest
    if nbdroot.startswith("/") or rest.startswith("/") and nbdroot[len(server):].startswith(":"):
        return server, "", rest, ""                       # ipv4:/path, /path
    port, slash, path = rest.partition("/")               # ipv4:port/path, ipv4/path
    return server, port, path if slash else rest, ""


def _device_index(device: str) -> int:
    m = re.fullmatch(r"(?:/dev/)?nbd(\d+)(?:p\d+)?", device)
    if not m:
        raise NoNbdRoot(f"not an NBD device: {device!r}")
    return int(m[1])


def _seconds(value: str, name: str, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise ValueError(f"{name}={value!r}: not a number of seconds")
    return int(value)


def target(cmdline: str, net_conf: dict[str, str] | None = None) -> Target:
    """The NBD root the initramfs attached (raises NoNbdRoot when there is none or it is off)."""
    args: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        args[key] = value
    net = net_conf or {}
    if args.get("bootserverd.nbd_reconnect", "1") in ("0", "off", "no"):
        raise NoNbdRoot("bootserverd.nbd_reconnect=0 on the kernel command line")
    nbddev = args.get("nbddev", "")
    if args.get("root", "").startswith("/dev/nbd"):
        nbddev = args["root"]
    nbdroot = args.get("nbdroot", "")
    if not nbdroot and not nbddev:
        raise NoNbdRoot("no nbdroot= and no root=/dev/nbd* on the kernel command line")
    if nbdroot in ("", "dhcp"):
        nbdroot = net.get("ROOTPATH", "")
    server, port, path, device = _split_nbdroot(nbdroot)
    device = nbddev or device
    if server in ("", "dhcp"):
        server = net.get("ROOTSERVER", "")
    if not server or not device or not path:
        raise NoNbdRoot(f"not enough to reconnect (nbdroot={nbdroot!r}, server={server!r}, export={path!r}, "
                        f"device={device!r})")
    if port and not port.isdigit():
        raise NoNbdRoot(f"nbdroot port {port!r} is not a number")
    return Target(host=server, port=int(port) if port else DEFAULT_PORT, export=path, index=_device_index(device),
                  dead_timeout=_seconds(args.get("bootserverd.nbd_dead_timeout"), "bootserverd.nbd_dead_timeout",
                                        DEFAULT_DEAD_TIMEOUT),
                  timeout=_seconds(args.get("bootserverd.nbd_timeout"), "bootserverd.nbd_timeout", DEFAULT_TIMEOUT))


def retry_delay(attempt: int, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0 = the first, made at once
    when the link died); ``jitter`` in [0, 1). 0.25, 0.5, 1, then every 2 s, each ± 20 %:
    a server back after an outage has its clients within ~2 s, and a dead one costs each
    client a SYN every 2 s."""
    base = min(MAX_DELAY, FIRST_DELAY * 2 ** min(attempt, 16))
    return base * (1 - JITTER / 2 + JITTER * min(max(jitter, 0.0), 1.0))
