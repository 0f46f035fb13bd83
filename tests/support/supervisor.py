"""A test supervisor that speaks systemd's service protocol, for running the real daemon.

What it reproduces of systemd 252 (Debian 12), as read in sd_notify(3), sd_listen_fds(3),
systemd.service(5) and src/core/{service,manager}.c:

* NOTIFY_SOCKET: an AF_UNIX datagram socket with SO_PASSCRED; one datagram is one message of
  newline-separated KEY=VALUE assignments (at most 4096 bytes; longer, truncated, NUL-carrying
  or credential-less datagrams are ignored), fds ride along as SCM_RIGHTS. Like NotifyAccess=main
  (what FileDescriptorStoreMax= implies), only the main process is heard: the spawned PID, or
  the one it names with MAINPID=. Where a key repeats, its first assignment counts.
* READY=1 / RELOADING=1 / STOPPING=1 (the last of them in a message wins, as in 252), STATUS=
  (empty clears it), MAINPID=, WATCHDOG=1 (time kept), EXTEND_TIMEOUT_USEC= (stretches start()'s
  wait for READY=1), BARRIER=1 (its one fd is closed, which is the answer).
* The fd store: FDSTORE=1 with FDNAME= (default "stored"; a name that is not printable ASCII
  without ':' of at most 255 characters is ignored) and FDPOLL=0. An fd that is already stored
  (same_fd(): same st_dev/st_ino, not a device node, same open flags) is not stored twice; once
  fd_store_max entries are held, the fd and the rest of its message are closed (a `rejected`
  line). FDSTOREREMOVE=1 + FDNAME= closes every entry of that name (and wins over FDSTORE=1 in
  the same message). fds sent without FDSTORE=1 are closed. Entries that show POLLHUP/POLLERR are
  closed and dropped unless stored with FDPOLL=0, watched all the time (systemd's epoll) and
  checked again right before a start.
* Handing the store back: the next process gets the entries at fds 3, 4, ... with LISTEN_FDS,
  LISTEN_FDNAMES (':'-joined) and LISTEN_PID set to its own PID. stop()/kill9() keep the store,
  as `systemctl restart` does, and as a crash does under Restart=; clear_store() is `systemctl
  stop` (and a crash without Restart=), where systemd 252 closes everything.

What it does not: cgroups (a stop signals the main process, then SIGKILLs what is left of its
process group: about KillMode=mixed), unit files, socket units (no socket-activated fds before
the stored ones), Restart= itself (the test restarts), watchdog enforcement, NotifyAccess=
other than main/all, kcmp() in same_fd(), MONOTONIC_USEC/reload handshakes, ERRNO=/BUSERROR=
beyond recording them, and FileDescriptorStorePreserve= (systemd 254+). Order: systemd keeps its
store newest first and its man page promises no order at all; handout_order="stored" (default)
passes entries in the order they were stored, "systemd" newest first: a daemon must go by names.
"""

from __future__ import annotations

import array
import fcntl
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

NOTIFY_BUFFER_MAX = 4096          # PIPE_BUF, as systemd's manager reads it
NOTIFY_FD_MAX = 768               # systemd's cap per message (the kernel's SCM_MAX_FD is 253)
FDNAME_MAX = 255
POLL_INTERVAL = 0.1               # the thread's poll(): bounds close() and missed wake-ups
_UCRED = struct.Struct("iII")     # pid, uid, gid


class SupervisorError(RuntimeError):
    """The supervised process did not get ready (message carries the log tail)."""


@dataclass
class StoreEntry:
    name: str
    fd: int                      # owned by the supervisor: look, don't close
    poll: bool                   # False when stored with FDPOLL=0
    dev: int
    ino: int
    time: float                  # monotonic time it was stored


def fdname_is_valid(name: str) -> bool:
    """systemd's rule: printable ASCII, no ':', at most 255 characters (empty is allowed)."""
    return len(name) <= FDNAME_MAX and all(" " <= c < "\x7f" and c != ":" for c in name)


def _same_fd(a: int, b: int) -> bool:
    """systemd's same_fd() without kcmp(): one open file, not just one device node."""
    if a == b:
        return True
    sa, sb = os.fstat(a), os.fstat(b)
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return False
    if stat.S_ISCHR(sa.st_mode) or stat.S_ISBLK(sa.st_mode):
        return False
    if (sa.st_dev, sa.st_ino) != (sb.st_dev, sb.st_ino):
        return False
    # the read and write ends of one pipe share an inode: their open flags tell them apart
    return fcntl.fcntl(a, fcntl.F_GETFL) == fcntl.fcntl(b, fcntl.F_GETFL)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


# Moves the stored fds (passed at numbers above the targets) to 3, 4, ... and closes the
# sources, then execs argv with LISTEN_PID=$$: exec keeps the PID, so the daemon sees its own.
_HANDOUT = 'exec {redirs} || exit 127; LISTEN_PID=$$; export LISTEN_PID; exec "$@"'


class Supervisor:
    """Runs one service process at a time the way systemd runs a Type=notify unit.

    ``events`` holds (monotonic time, {KEY: VALUE}) for every message heard, with the sender's
    PID under "_PID" and the number of fds that came with it under "_FDS" (journal style).
    ``rejected`` holds a line per message, fd or name that systemd would have refused, and per
    stored fd dropped on POLLHUP/POLLERR.
    """

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None,
                 cwd: str | os.PathLike | None = None, log_path: str | os.PathLike | None = None,
                 fd_store_max: int = 64, notify_access: str = "main",
                 handout_order: str = "stored") -> None:
        if notify_access not in ("main", "all"):
            raise ValueError("notify_access: 'main' or 'all'")
        if handout_order not in ("stored", "systemd"):
            raise ValueError("handout_order: 'stored' or 'systemd'")
        self.argv = [os.fspath(a) for a in argv]
        self.env = dict(os.environ if env is None else env)
        self.cwd = cwd
        self.fd_store_max = fd_store_max
        self.notify_access = notify_access
        self.handout_order = handout_order
        self.events: list[tuple[float, dict[str, str]]] = []
        self.rejected: list[str] = []
        self.status: str | None = None
        self.notify_state: str | None = None     # "ready" | "reloading" | "stopping"
        self.main_pid: int | None = None
        self.last_watchdog: float | None = None
        self.ready = threading.Event()
        self._store: list[StoreEntry] = []
        self._lock = threading.RLock()
        self._proc: subprocess.Popen | None = None
        self._extend_until = 0.0
        self._ready_time = 0.0
        self._closed = False

        self._dir = tempfile.mkdtemp(prefix="sdsup-")
        os.chmod(self._dir, 0o711)               # a daemon that drops root can still reach it
        self.log_path = Path(log_path) if log_path else Path(self._dir) / "service.log"
        self.notify_socket = os.path.join(self._dir, "notify")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.notify_socket)
        os.chmod(self.notify_socket, 0o666)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.setblocking(False)
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name="sd-supervisor", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- public API

    @property
    def pid(self) -> int | None:
        """PID of the running process, None when there is none."""
        proc = self._proc
        return proc.pid if proc is not None and not self._exited(proc, 0) else None

    def names(self) -> list[str]:
        """FDNAMEs in the store, in the order they were stored."""
        with self._lock:
            return [e.name for e in self._store]

    def entries(self) -> list[StoreEntry]:
        with self._lock:
            return list(self._store)

    def start(self, timeout: float = 10.0) -> float:
        """Spawn argv with the store handed over; return the seconds it took to send READY=1."""
        self._check_open()
        if self.pid is not None:
            raise SupervisorError(f"already running as PID {self.pid}")
        old = self._proc
        if old is not None and old.returncode is None:    # it died on its own: a crash
            self._kill_group(old, signal.SIGKILL)
            self._reaped(old)
        env = {k: v for k, v in self.env.items()
               if k not in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")}
        env["NOTIFY_SOCKET"] = self.notify_socket
        with self._lock:
            self._drain()                        # the last words of the previous process
            self._drop_hung_up()
            entries = list(self._store)
            if self.handout_order == "systemd":
                entries.reverse()
            self.ready.clear()
            self.notify_state = None
            self.main_pid = None
            self._extend_until = 0.0
            sources: list[int] = []
            try:
                argv = self.argv
                if entries:
                    base = 3 + len(entries)
                    sources = [fcntl.fcntl(e.fd, fcntl.F_DUPFD_CLOEXEC, base) for e in entries]
                    redirs = " ".join([f"{3 + i}<&{fd}" for i, fd in enumerate(sources)]
                                      + [f"{fd}<&-" for fd in sources])
                    argv = ["/bin/bash", "-c", _HANDOUT.format(redirs=redirs),
                            "bootserverd-handout", *self.argv]
                    env["LISTEN_FDS"] = str(len(entries))
                    env["LISTEN_FDNAMES"] = ":".join(e.name for e in entries)
                with open(self.log_path, "ab", buffering=0) as log:
                    log.write(f"--- supervisor: start {self.argv} with "
                              f"{[e.name for e in entries]}\n".encode())
                    began = time.monotonic()
                    self._proc = subprocess.Popen(
                        argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, close_fds=True, pass_fds=sources,
                        start_new_session=True)
                self.main_pid = self._proc.pid
            finally:
                for fd in sources:
                    _close(fd)
        proc = self._proc
        deadline = began + timeout
        while True:
            if self.ready.wait(0.02):
                return self._ready_time - began
            if self._exited(proc, 0):
                self._drain()
                if self.ready.is_set():
                    return self._ready_time - began
                self._kill_group(proc, signal.SIGKILL)
                code = self._reaped(proc)
                raise SupervisorError(f"exited with {code} before READY=1\n{self.log_tail()}")
            now = time.monotonic()
            if now >= max(deadline, self._extend_until):
                self._kill_group(proc, signal.SIGKILL)
                self._wait(proc, 5.0)
                self._reaped(proc)
                raise SupervisorError(f"no READY=1 within {timeout:.1f} s\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Signal the main process, SIGKILL after timeout; keep the store. Returns the exit code
        (negative: killed by that signal, as subprocess reports it)."""
        proc = self._proc
        if proc is None:
            raise SupervisorError("nothing was started")
        if not self._exited(proc, 0):
            target = self.main_pid or proc.pid
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                pass
            if not self._exited(proc, timeout):
                self._kill_group(proc, signal.SIGKILL)
                self._exited(proc, 5.0)
        self._kill_group(proc, signal.SIGKILL)      # leftovers of its process group
        self._drain()                               # systemd reads notify before SIGCHLD
        return self._reaped(proc)

    def kill9(self) -> int:
        """A crash: SIGKILL, the store stays (as with Restart=)."""
        return self.stop(signal.SIGKILL, timeout=5.0)

    def restart(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> float:
        """stop(sig) + start(); returns seconds from the signal to the new READY=1."""
        began = time.monotonic()
        self.stop(sig, timeout)
        self.start(timeout)
        return self._ready_time - began

    def clear_store(self) -> None:
        """`systemctl stop` (or a crash without Restart=): systemd 252 closes the whole store."""
        with self._lock:
            for entry in self._store:
                _close(entry.fd)
            self._store.clear()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until predicate() holds (messages are handled in the background)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s; "
                                   f"store={self.names()} status={self.status!r}")
            time.sleep(0.01)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        proc = self._proc
        if proc is not None:
            self._kill_group(proc, signal.SIGKILL)
            self._wait(proc, 5.0)
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(5.0)
        with self._lock:
            self.clear_store()
            self._sock.close()
            _close(self._wake_r)
            _close(self._wake_w)
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- process handling

    def _check_open(self) -> None:
        if self._closed:
            raise SupervisorError("supervisor is closed")

    @staticmethod
    def _exited(proc: subprocess.Popen, timeout: float) -> bool:
        """Wait for the exit without reaping: the zombie keeps its PID and group id ours."""
        deadline = time.monotonic() + timeout
        while proc.returncode is None:
            try:
                if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT):
                    return True
            except ChildProcessError:
                proc.poll()
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    @staticmethod
    def _wait(proc: subprocess.Popen, timeout: float) -> bool:
        try:
            proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    @staticmethod
    def _kill_group(proc: subprocess.Popen, sig: int) -> None:
        """Signal the session the child leads (its PID is the group's id), nothing else."""
        if proc.returncode is not None:               # reaped: its ids may be someone else's
            return
        try:
            os.kill(proc.pid, sig)
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    @staticmethod
    def _reaped(proc: subprocess.Popen) -> int:
        return proc.returncode if proc.returncode is not None else proc.wait(5.0)

    # ---------------------------------------------------------------- the notify thread

    def _run(self) -> None:
        while not self._closed:
            try:
                self._once()
            except Exception as exc:  # noqa: BLE001 - keep listening whatever happened
                self._note(f"supervisor thread error: {exc!r}")
                time.sleep(POLL_INTERVAL)

    def _once(self) -> None:
        with self._lock:
            if self._sock.fileno() < 0:
                return
            watched = {e.fd for e in self._store if e.poll}
            poller = select.poll()
            poller.register(self._sock.fileno(), select.POLLIN)
            poller.register(self._wake_r, select.POLLIN)
            for fd in watched:
                poller.register(fd, 0)               # like epoll: HUP and ERR are always reported
        try:
            ready = poller.poll(POLL_INTERVAL * 1000)
        except InterruptedError:
            return
        hung = False
        for fd, ev in ready:
            if fd == self._wake_r:
                try:
                    os.read(self._wake_r, 64)
                except OSError:
                    pass
            elif fd in watched and ev & (select.POLLHUP | select.POLLERR):
                hung = True
        with self._lock:
            if self._closed:
                return
            if hung:
                self._drop_hung_up()
            self._drain()

    def _drop_hung_up(self) -> None:
        """Close and forget polled entries with POLLHUP/POLLERR (checked afresh, fd by fd)."""
        with self._lock:
            keep = []
            for entry in self._store:
                if entry.poll and self._hung_up(entry.fd):
                    self._note(f"{entry.name}: POLLHUP/POLLERR on stored fd, closed")
                    _close(entry.fd)
                else:
                    keep.append(entry)
            self._store[:] = keep

    @staticmethod
    def _hung_up(fd: int) -> bool:
        poller = select.poll()
        poller.register(fd, 0)
        return any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(0))

    def _drain(self) -> None:
        """Handle every datagram waiting on the socket."""
        with self._lock:
            while self._sock.fileno() >= 0:
                try:
                    data, anc, flags, _ = self._sock.recvmsg(
                        NOTIFY_BUFFER_MAX,
                        socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(4 * NOTIFY_FD_MAX),
                        socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:
                    return
                self._handle(data, anc, flags)

    def _handle(self, data: bytes, anc, flags: int) -> None:
        fds: list[int] = []
        cred = None
        for level, kind, payload in anc:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_RIGHTS:
                arr = array.array("i")
                arr.frombytes(payload[: len(payload) - len(payload) % arr.itemsize])
                fds.extend(arr)
            elif kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                cred = _UCRED.unpack(payload[:_UCRED.size])
        try:
            self._interpret(data, fds, flags, cred)
        except Exception as exc:  # noqa: BLE001 - a test helper must not lose its thread
            self._note(f"supervisor error on {data[:200]!r}: {exc!r}")
        finally:
            for fd in fds:                    # whatever the store did not take is closed
                _close(fd)

    def _note(self, line: str) -> None:
        self.rejected.append(line)

    def _interpret(self, data: bytes, fds: list[int], flags: int, cred) -> None:
        if flags & socket.MSG_CTRUNC:
            return self._note("message with truncated control data (too many fds?), ignored")
        if flags & socket.MSG_TRUNC or len(data) >= NOTIFY_BUFFER_MAX:
            return self._note(f"message over {NOTIFY_BUFFER_MAX - 1} bytes, ignored")
        if cred is None or cred[0] <= 0:
            return self._note("message without credentials, ignored")
        if not data:
            return self._note("zero-length message, ignored")
        if b"\0" in data:
            return self._note("message with embedded NUL bytes, ignored")
        pid, uid, _gid = cred
        text = data.decode("utf-8", errors="surrogateescape")
        tags = [t for t in text.replace("\r", "\n").split("\n") if t]
        fields: dict[str, str] = {}
        for tag in tags:
            key, sep, value = tag.partition("=")
            if sep and key not in fields:
                fields[key] = value
        main = self.main_pid
        if self.notify_access == "main" and pid != main:
            return self._note(f"message from PID {pid}, only main PID {main} is heard: {tags}")
        now = time.monotonic()
        self.events.append((now, {**fields, "_PID": str(pid), "_FDS": str(len(fds))}))

        if "BARRIER=1" in tags:
            if len(tags) != 1 or len(fds) != 1:
                self._note("BARRIER=1 must come alone with exactly one fd")
            return                                  # closing its fd is the answer

        if "MAINPID" in fields:
            self._set_main_pid(fields["MAINPID"], uid)
        for tag in reversed(tags):                 # systemd 252: the last of the three wins
            state = {"READY=1": "ready", "RELOADING=1": "reloading",
                     "STOPPING=1": "stopping"}.get(tag)
            if state:
                self.notify_state = state
                if state == "ready" and not self.ready.is_set():
                    self._ready_time = now
                    self.ready.set()
                break
        if "STATUS" in fields:
            value = fields["STATUS"]
            try:
                value.encode("utf-8")
                self.status = value or None
            except UnicodeEncodeError:
                self._note("STATUS= not UTF-8, ignored")
        if fields.get("WATCHDOG") == "1":
            self.last_watchdog = now
        if "EXTEND_TIMEOUT_USEC" in fields:
            try:
                self._extend_until = max(self._extend_until,
                                         now + int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6)
            except ValueError:
                self._note(f"EXTEND_TIMEOUT_USEC={fields['EXTEND_TIMEOUT_USEC']} unparsable")

        if "FDSTOREREMOVE=1" in tags:
            name = fields.get("FDNAME")
            if name is None or not fdname_is_valid(name):
                self._note("FDSTOREREMOVE=1 without a valid FDNAME=, ignored")
            else:
                self._remove(name)
        elif "FDSTORE=1" in tags:
            name = fields.get("FDNAME")
            if name is not None and not fdname_is_valid(name):
                self._note(f"FDNAME={name!r} invalid, ignored")
                name = None
            self._store_fds(fds, name or "stored", "FDPOLL=0" not in tags, now)
        elif fds:
            self._note(f"{len(fds)} fd(s) without FDSTORE=1, closed")

    def _set_main_pid(self, value: str, uid: int) -> None:
        try:
            new = int(value)
        except ValueError:
            return self._note(f"MAINPID={value} unparsable")
        if new <= 0 or self.notify_state == "stopping":
            return self._note(f"MAINPID={value} refused")
        proc = self._proc
        ours = proc is not None and (new == proc.pid or _session(new) == proc.pid)
        if not ours and uid != 0:
            return self._note(f"MAINPID={new} is not of this service, refused")
        self.main_pid = new

    def _store_fds(self, fds: list[int], name: str, poll: bool, now: float) -> None:
        while fds:
            if len(self._store) >= self.fd_store_max:
                self._note(f"{name}: store full (fd_store_max={self.fd_store_max}), "
                           f"{len(fds)} fd(s) closed")
                return                                 # the caller closes what is left
            fd = fds.pop(0)
            if any(_same_fd(entry.fd, fd) for entry in self._store):
                _close(fd)                             # already stored: not twice
                continue
            st = os.fstat(fd)
            self._store.append(StoreEntry(name, fd, poll, st.st_dev, st.st_ino, now))

    def _remove(self, name: str) -> None:
        keep = []
        for entry in self._store:
            if entry.name == name:
                _close(entry.fd)
            else:
                keep.append(entry)
        self._store[:] = keep


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
