"""``bootserverd-nbd-reconnect``: keeps a thin client's NBD root alive when its server goes away.

Debian 12's nbd-client (3.24) sets /dev/nbd0 up over netlink in the initramfs and exits: the
kernel is given no dead-connection timeout, so the moment the socket closes every read fails
and the client is lost. This resident helper, started by systemd as the first thing from the
root (bootserverd-nbd-reconnect.service):

1. reads what the initramfs attached (nbdroot.target: the kernel command line, DHCP's
   root server), resolves the server once, and joins the nbd family's multicast group;
2. sets the device's dead-connection timeout (the kernel holds I/O, requeued, while no
   connection is alive) and its request timeout (an unanswered request marks the connection
   dead and is sent again on the next one) with NBD_CMD_RECONFIGURE;
3. locks itself in memory (mlockall), refuses any later import, and never formats a
   traceback (which would read source files): from here on it needs nothing from the root
   file system, which may be the very thing that is gone;
4. on NBD_CMD_LINK_DEAD for the device, connects to the same server address and export with
   backoff (nbdroot.retry_delay), does the handshake (nbdwire.negotiate: fixed newstyle,
   NBD_OPT_GO), checks the export has the device's size, and hands the socket to the kernel
   (NBD_CMD_RECONFIGURE with NBD_ATTR_SOCKETS); the held I/O then goes on.

Messages go to the kernel log (/dev/kmsg), which needs no file system and reaches the journal
and the console. systemd starts it with argv[0] ``@bootserverd-nbd-reconnect``, so the final
killing spree at shutdown spares it (systemd's convention for root storage daemons).

    bootserverd-nbd-reconnect [--cmdline FILE] [--server HOST] [--port N] [--export NAME]
                              [--device /dev/nbdN] [--no-lock] [--log-stderr]
"""

from __future__ import annotations

# Everything the helper will ever run is imported here, before it locks itself in memory.
import argparse
import ctypes
import errno
import glob
import linecache
import logging
import os
import random
import select
import signal
import socket
import sys
import time
import traceback  # noqa: F401  (imported now: an uncaught error formats without a lazy import)

from pyroute2.netlink import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from bootserverd_client import nbdgenl, nbdroot, nbdwire

NAME = "bootserverd-nbd-reconnect"
CONNECT_TIMEOUT = 3.0        # s: a server machine that is gone answers no SYN
HANDSHAKE_TIMEOUT = 5.0      # s
EVENT_WAIT = 60.0            # s: one wait for a multicast (the loop goes on)
GIVE_UP_AFTER = 3600         # s past the dead-connection timeout: then wait for the next event
MCL_CURRENT, MCL_FUTURE = 1, 2
# the socket the kernel gets: a server that vanishes without a reset is noticed within ~30 s
KEEPIDLE, KEEPINTVL, KEEPCNT, USER_TIMEOUT_MS = 15, 5, 3, 30000


class Log:
    """One line per event to the kernel log (or stderr): no file system, never blocks long."""

    def __init__(self, use_kmsg: bool):
        self.fd = None
        if use_kmsg:
            try:
                self.fd = os.open("/dev/kmsg", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                self.fd = None
        self.prefix = f"{NAME}[{os.getpid()}]: "

    def __call__(self, text: str, level: int = 5) -> None:
        line = self.prefix + text
        try:
            if self.fd is not None:
                os.write(self.fd, f"<{level}>{line}\n".encode("utf-8", "replace")[:900])
            else:
                os.write(2, (line + "\n").encode("utf-8", "replace"))
        except OSError:
            pass


def lock_in_memory(log: Log) -> None:
    """mlockall, no more imports, no source lines in tracebacks, no logging module records."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
        raise OSError(ctypes.get_errno(), "mlockall failed")
    sys.meta_path.insert(0, _NoImports())
    linecache.updatecache = lambda *args, **kwargs: []       # traceback would read .py files
    linecache.lazycache = lambda *args, **kwargs: False
    logging.disable(logging.CRITICAL)                         # pyroute2's own warnings
    sys.excepthook = _bare_excepthook(log)
    locked = _status_kb("VmLck")
    log(f"locked in memory ({locked // 1024} MB): needs nothing from the root file system from now on")


class _NoImports:
    def find_spec(self, name, path=None, target=None):
        raise ImportError(f"{name}: imported after {NAME} locked itself in memory")


def _bare_excepthook(log: Log):
    def hook(kind, value, tb):
        log(f"fatal: {kind.__name__}: {value}", level=3)
    return hook


def _status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def sd_notify(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(path)
            sock.sendall(state.encode())
        except OSError:
            pass


def device_size(index: int) -> int:
    with open(f"/sys/block/nbd{index}/size") as f:        # sysfs: 512-byte sectors
        return int(f.read()) * 512


def read_net_conf() -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(glob.glob("/run/net-*.conf")):
        try:
            with open(path) as f:
                merged.update({k: v for k, v in nbdroot.parse_net_conf(f.read()).items() if v})
        except OSError:
            pass
    return merged


class Keeper:
    def __init__(self, target: nbdroot.Target, addresses: list[tuple], size: int, log: Log):
        self.target = target
        self.addresses = addresses          # getaddrinfo results, resolved once before the lock
        self.size = size
        self.log = log
        self.ctl = GenericNetlinkSocket()
        self.ctl.bind(nbdgenl.FAMILY, nbdgenl.nbd_msg)
        self.mon = GenericNetlinkSocket()
        self.mon.bind(nbdgenl.FAMILY, nbdgenl.nbd_msg)
        self.mon.add_membership(nbdgenl.MCAST_GROUP)     # before anything can die unseen
        self.rng = random.Random()

    def request(self, msg: nbdgenl.nbd_msg) -> None:
        """Send one NBD command and wait for the kernel's answer (raises NetlinkError)."""
        tuple(self.ctl.nlm_request(msg, msg_type=self.ctl.prid, msg_flags=nbdgenl.REQUEST_FLAGS))

    def configure(self) -> None:
        t = self.target
        self.request(nbdgenl.reconfigure(t.index, dead_timeout=t.dead_timeout, timeout=t.timeout or None))
        requests = (f"a request unanswered for {t.timeout} s is sent again on a new connection" if t.timeout
                    else "the request timeout is the kernel's")
        self.log(f"{t.device}: export {t.export!r} at {t.host}:{t.port}; the kernel holds I/O up to "
                 f"{t.dead_timeout} s without a connection, {requests}; reconnecting when it dies")

    # -- waiting -------------------------------------------------------------------------
    def wait_dead(self, max_seconds: float) -> str | None:
        """Why to reconnect now (a LINK_DEAD for our device, or lost events), or None when
        ``max_seconds`` passed without one."""
        ready, _, _ = select.select([self.mon], [], [], max_seconds)
        if not ready:
            return None
        try:
            messages = self.mon.get()
        except OSError as e:
            if e.errno == errno.ENOBUFS:        # events were dropped: ours may be among them
                return "netlink events lost (ENOBUFS)"
            raise
        for msg in messages:
            if nbdgenl.link_dead_index(msg) == self.target.index:
                return "the kernel reports the connection dead"
        return None

    # -- reconnecting --------------------------------------------------------------------
    def connect(self) -> socket.socket:
        return connect_export(self.addresses, self.target.export, self.size)

    def reconnect(self, why: str) -> bool:
        t = self.target
        began = time.monotonic()
        deadline = began + t.dead_timeout + GIVE_UP_AFTER
        self.log(f"{t.device}: {why}; reconnecting to {t.host}:{t.port}", level=4)
        attempt = 0
        reported = ""
        while time.monotonic() < deadline:
            try:
                sock = self.connect()
            except (OSError, nbdwire.HandshakeError) as e:
                text = f"{type(e).__name__}: {e}"
                if text != reported or attempt % 30 == 0:      # one line per new reason, then every ~minute
                    self.log(f"{t.device}: attempt {attempt + 1} failed ({text})", level=4)
                    reported = text
                time.sleep(nbdroot.retry_delay(attempt, self.rng.random()))
                attempt += 1
                continue
            try:
                self.request(nbdgenl.reconfigure(t.index, fd=sock.fileno()))
            except NetlinkError as e:
                self.log(f"{t.device}: the kernel refused the new socket (error {e.code})", level=3)
                time.sleep(nbdroot.retry_delay(attempt, self.rng.random()))
                attempt += 1
                continue
            finally:
                sock.close()                       # the kernel holds its own reference
            self.log(f"{t.device}: reconnected to {t.host}:{t.port} after {time.monotonic() - began:.1f} s "
                     f"({attempt + 1} attempts)")
            return True
        self.log(f"{t.device}: gave up after {time.monotonic() - began:.0f} s; waiting for the next event", level=3)
        return False

    def run(self) -> None:
        while True:                               # a daemon: ends with SIGTERM
            why = self.wait_dead(EVENT_WAIT)
            if why:
                self.reconnect(why)


def connect_export(addresses: list[tuple], export: str, size: int) -> socket.socket:
    """A blocking TCP socket in the transmission phase on ``export`` of ``size`` bytes, tuned
    for the kernel, from the first of ``addresses`` (getaddrinfo tuples) that gives one
    (raises OSError or HandshakeError: the last failure)."""
    last: Exception | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, proto)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(address)
            sock.settimeout(HANDSHAKE_TIMEOUT)
            found = nbdwire.negotiate(lambda n: _recv_exact(sock, n), sock.sendall, export)
            if found.size != size:
                raise nbdwire.HandshakeError(f"export {export!r} has {found.size} bytes, the device {size}: "
                                             "not the same image")
            _tune(sock)
            sock.settimeout(None)             # the kernel reads and writes it blocking
            return sock
        except (OSError, nbdwire.HandshakeError) as e:
            sock.close()
            last = e
    raise last if last else OSError(errno.EHOSTUNREACH, "no address")


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise OSError(errno.ECONNRESET, "the server closed the connection during the handshake")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPIDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPINTVL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPCNT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, USER_TIMEOUT_MS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=NAME, description="Reconnect the NBD root to its server when the connection dies.")
    p.add_argument("--cmdline", default="/proc/cmdline", help="kernel command line to read (default: %(default)s)")
    p.add_argument("--server", help="server address (default: from nbdroot= / DHCP)")
    p.add_argument("--port", type=int, help="server port")
    p.add_argument("--export", help="export name")
    p.add_argument("--device", help="NBD device, e.g. /dev/nbd0")
    p.add_argument("--no-lock", action="store_true", help="do not mlockall (tests)")
    p.add_argument("--log-stderr", action="store_true", help="log to stderr, not the kernel log")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Log(use_kmsg=not args.log_stderr)
    try:
        with open(args.cmdline) as f:
            cmdline = f.read()
        target = nbdroot.target(cmdline, read_net_conf())
    except nbdroot.NoNbdRoot as e:
        log(f"nothing to keep: {e}")
        sd_notify("READY=1\nSTATUS=no NBD root")
        return 0
    except (OSError, ValueError) as e:
        log(f"cannot read the NBD root's settings: {e}", level=3)
        return 1
    overrides = {k: v for k, v in (("host", args.server), ("port", args.port), ("export", args.export)) if v}
    if args.device:
        overrides["index"] = int(args.device.rstrip("/").split("nbd")[-1])
    if overrides:
        target = nbdroot.Target(**{**target.__dict__, **overrides})
    try:
        addresses = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        keeper = Keeper(target, addresses, device_size(target.index), log)
        keeper.configure()
        if not args.no_lock:
            lock_in_memory(log)
    except (OSError, NetlinkError, ValueError) as e:
        log(f"cannot keep {target.device}: {type(e).__name__}: {e}", level=3)
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sd_notify(f"READY=1\nSTATUS=keeping {target.device} ({target.export} at {target.host}:{target.port})")
    keeper.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
