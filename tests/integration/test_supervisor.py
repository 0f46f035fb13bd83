"""The test supervisor (tests/support/supervisor.py) against real child processes.

Each test writes a tiny Python service, runs it under the supervisor and checks what systemd 252
would do: readiness and status, the fd store across a SIGTERM restart and across kill -9 (a
connection stays open and the next process serves it), POLLHUP pruning vs FDPOLL=0,
FDSTOREREMOVE, duplicates, the store limit, and that bootserverd's own sd_notify is heard.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.supervisor import Supervisor, SupervisorError

REPO = Path(__file__).resolve().parents[2]

CHILD = r'''
import array, os, select, signal, socket, sys, time

def notify(text, fds=()):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        s.sendmsg([text.encode()], anc, 0, os.environ["NOTIFY_SOCKET"])

def memfd(content):
    fd = os.memfd_create("state")
    os.write(fd, content)
    return fd

def closed_by_peer(fd, timeout=5.0):
    """True once the other end of this pipe is gone (EOF within timeout)."""
    r, _, _ = select.select([fd], [], [], timeout)
    return bool(r) and os.read(fd, 1) == b""

def connect(path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    return c

def on_term(*_):
    notify("STOPPING=1")
    os._exit(0)

signal.signal(signal.SIGTERM, on_term)
mode, args = sys.argv[1], sys.argv[2:]
inherited = {}
if os.environ.get("LISTEN_PID") == str(os.getpid()):
    names = os.environ["LISTEN_FDNAMES"].split(":")
    assert len(names) == int(os.environ["LISTEN_FDS"])
    inherited = {name: 3 + i for i, name in enumerate(names)}

def open_fds():
    out = []
    for fd in range(3, 64):
        try:
            os.fstat(fd)
            out.append(fd)
        except OSError:
            pass
    return out

if mode == "basic":
    notify("STATUS=starting")
    notify("READY=1\nSTATUS=serving 3 clients")
    child = os.fork()
    if child == 0:                                  # not the main process: not heard
        notify("STATUS=intruder")
        os._exit(0)
    os.waitpid(child, 0)
    notify("STATUS=still main")

elif mode == "conn":
    if not inherited:
        conn = connect(args[0])
        conn.sendall(b"gen1\n")
        notify("FDSTORE=1\nFDNAME=conn-1", [conn.fileno()])
        notify("FDSTORE=1\nFDNAME=state\nFDPOLL=0", [memfd(b"export=school offset=4096")])
        notify("READY=1\nSTATUS=gen1")
    else:
        fds = open_fds()
        conn = socket.socket(fileno=inherited["conn-1"])
        state = os.pread(inherited["state"], 100, 0).decode()
        conn.sendall(f"gen2 pid={os.getpid()} LISTEN_PID={os.environ['LISTEN_PID']} "
                     f"LISTEN_FDS={os.environ['LISTEN_FDS']} "
                     f"LISTEN_FDNAMES={os.environ['LISTEN_FDNAMES']} "
                     f"conn-1={inherited['conn-1']} state={inherited['state']} "
                     f"open={','.join(map(str, fds))} content={state}\n".encode())
        notify("READY=1\nSTATUS=gen2")
        request = conn.recv(100)
        conn.sendall(b"echo:" + request)

elif mode == "hup":
    if not inherited:
        a, b = connect(args[0]), connect(args[0])
        a.sendall(b"a")
        b.sendall(b"b")
        notify("FDSTORE=1\nFDNAME=conn-a", [a.fileno()])
        notify("FDSTORE=1\nFDNAME=conn-b\nFDPOLL=0", [b.fileno()])
        notify("READY=1")
    else:
        notify("READY=1\nSTATUS=got " + os.environ["LISTEN_FDNAMES"])

elif mode == "remove":
    r, w = os.pipe()
    notify("FDSTORE=1\nFDNAME=tmp", [memfd(b"1"), memfd(b"2")])
    notify("FDSTORE=1\nFDNAME=keep", [memfd(b"3")])
    notify("FDSTORE=1\nFDNAME=tmp\nFDPOLL=0", [w])
    os.close(w)
    notify("FDSTOREREMOVE=1\nFDNAME=tmp")
    removed = closed_by_peer(r)
    r2, w2 = os.pipe()
    notify("STATUS=an fd without FDSTORE=1", [w2])
    os.close(w2)
    stray = closed_by_peer(r2)
    notify(f"READY=1\nSTATUS=removed-closed={removed} stray-closed={stray}")

elif mode == "dup":
    s1, s2 = socket.socketpair()
    r, w = os.pipe()
    notify("FDSTORE=1\nFDNAME=conn-1", [s1.fileno()])
    notify("FDSTORE=1\nFDNAME=conn-1-again", [s1.fileno()])
    notify("FDSTORE=1\nFDNAME=conn-1-dup", [os.dup(s1.fileno())])
    notify("FDSTORE=1\nFDNAME=both", [s1.fileno(), s1.fileno()])
    notify("FDSTORE=1\nFDNAME=conn-2", [s2.fileno()])
    notify("FDSTORE=1\nFDNAME=pipe-r", [r])        # one inode, two ends: two entries
    notify("FDSTORE=1\nFDNAME=pipe-w", [w])
    notify("READY=1")

elif mode == "full":
    r, w = os.pipe()
    notify("FDSTORE=1\nFDNAME=m1", [memfd(b"1")])
    notify("FDSTORE=1\nFDNAME=m2", [memfd(b"2")])
    notify("FDSTORE=1\nFDNAME=m3", [w])
    os.close(w)
    notify(f"READY=1\nSTATUS=m3-closed={closed_by_peer(r)}")

elif mode == "slow":
    notify("EXTEND_TIMEOUT_USEC=5000000")
    time.sleep(2.0)
    notify("READY=1")

elif mode == "crash":
    sys.exit(3)

while True:
    time.sleep(1)
'''


@pytest.fixture
def child(tmp_path):
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return lambda mode, *args: [sys.executable, str(path), mode, *map(str, args)]


@pytest.fixture
def listener():
    """A listening AF_UNIX socket (short path) the children connect to."""
    where = tempfile.mkdtemp(prefix="sdt-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(os.path.join(where, "c"))
    sock.listen(8)
    sock.settimeout(10)
    yield sock
    sock.close()
    shutil.rmtree(where, ignore_errors=True)


def accept(listener):
    conn, _ = listener.accept()
    conn.settimeout(10)
    return conn


def readline(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data.decode()


def still_open(conn):
    """No EOF and nothing pending: the peer (some process, or the store) still holds it."""
    readable, _, _ = select.select([conn], [], [], 0.2)
    return not readable


def test_ready_and_status_are_seen_and_only_the_main_process_is_heard(child):
    with Supervisor(child("basic")) as sup:
        took = sup.start(timeout=10)
        assert 0 < took < 10
        assert sup.ready.is_set() and sup.notify_state == "ready"
        sup.wait_for(lambda: sup.status == "still main")
        statuses = [m.get("STATUS") for _, m in sup.events]
        assert statuses[:2] == ["starting", "serving 3 clients"]
        assert "intruder" not in statuses
        assert any("only main PID" in line and "intruder" in line for line in sup.rejected)
        assert all(m["_PID"] == str(sup.pid) for _, m in sup.events)
        pid = sup.pid
        assert sup.stop() == 0
        assert sup.pid is None
        assert sup.notify_state == "stopping"
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_bootserverd_sdnotify_is_heard(tmp_path):
    script = ("from bootserverd.ops.sdnotify import notify\n"
              "import time\n"
              "notify('STATUS=loading inventory')\n"
              "notify('READY=1')\n"
              "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with Supervisor([sys.executable, "-c", script], env=env, cwd=REPO) as sup:
        sup.start(timeout=20)
        assert sup.status == "loading inventory"
        assert sup.stop() == -signal.SIGTERM


def test_start_fails_loudly_and_extend_timeout_is_honoured(child):
    with Supervisor(child("crash")) as sup, pytest.raises(SupervisorError, match="exited with 3"):
        sup.start(timeout=10)
    with Supervisor(child("slow")) as sup:
        assert sup.start(timeout=1.0) > 1.5         # EXTEND_TIMEOUT_USEC=5 s stretched it


@pytest.mark.parametrize("how", ["sigterm", "kill9"])
@pytest.mark.parametrize("order,names", [("stored", "conn-1:state"), ("systemd", "state:conn-1")])
def test_a_connection_survives_a_restart(child, listener, how, order, names):
    with Supervisor(child("conn", listener.getsockname()), handout_order=order) as sup:
        sup.start()
        ours = accept(listener)
        assert readline(ours) == "gen1\n"
        assert sup.names() == ["conn-1", "state"]
        first = sup.pid
        code = sup.stop() if how == "sigterm" else sup.kill9()
        assert code == (0 if how == "sigterm" else -signal.SIGKILL)
        assert still_open(ours), "the store must keep the connection open between processes"

        sup.start()
        second = sup.pid
        assert second != first
        report = dict(item.split("=", 1) for item in readline(ours).split()[1:])
        assert report["pid"] == report["LISTEN_PID"] == str(second)
        assert report["LISTEN_FDS"] == "2"
        assert report["LISTEN_FDNAMES"] == names
        assert {report["conn-1"], report["state"]} == {"3", "4"}
        assert report["open"] == "3,4", "only the stored fds are inherited"
        assert report["content"] == "export=school"
        ours.sendall(b"ping")
        assert ours.recv(100) == b"echo:ping"
        assert sup.names() == ["conn-1", "state"]   # the store keeps its copies
        ours.close()


def test_restart_reports_the_stall_and_a_full_stop_closes_the_store(child, listener):
    with Supervisor(child("conn", listener.getsockname())) as sup:
        sup.start()
        ours = accept(listener)
        assert readline(ours) == "gen1\n"
        stall = sup.restart()
        assert 0 < stall < 10
        assert readline(ours).startswith("gen2 ")
        sup.stop()
        assert still_open(ours)
        sup.clear_store()                           # `systemctl stop`: nothing holds it now
        assert sup.names() == []
        assert ours.recv(100) == b""
        sup.start()                                 # a fresh start: no LISTEN_FDS, connects anew
        assert readline(accept(listener)) == "gen1\n"


def test_hung_up_fds_are_dropped_unless_fdpoll_0(child, listener):
    with Supervisor(child("hup", listener.getsockname())) as sup:
        sup.start()
        ends = {}
        for _ in range(2):
            conn = accept(listener)
            ends[conn.recv(1)] = conn
        assert sup.names() == ["conn-a", "conn-b"]
        sup.stop()                                   # only the store holds them now
        for conn in ends.values():
            conn.close()
        sup.wait_for(lambda: sup.names() == ["conn-b"], timeout=5)
        assert any("conn-a: POLLHUP" in line for line in sup.rejected)
        sup.start()
        assert sup.status == "got conn-b"


def test_fdstoreremove_closes_every_entry_of_that_name(child):
    with Supervisor(child("remove")) as sup:
        sup.start()
        assert sup.names() == ["keep"]
        assert sup.status == "removed-closed=True stray-closed=True"
        assert any("without FDSTORE=1" in line for line in sup.rejected)


def test_the_same_file_is_stored_once(child):
    with Supervisor(child("dup")) as sup:
        sup.start()
        assert sup.names() == ["conn-1", "conn-2", "pipe-r", "pipe-w"]
        first = sup.entries()[0]
        assert (first.dev, first.ino) == (os.fstat(first.fd).st_dev, os.fstat(first.fd).st_ino)


def test_over_fd_store_max_is_rejected(child):
    with Supervisor(child("full"), fd_store_max=2) as sup:
        sup.start()
        assert sup.names() == ["m1", "m2"]
        assert sup.status == "m3-closed=True"
        assert any("store full" in line and "m3" in line for line in sup.rejected)


def test_close_leaves_nothing_behind(child):
    sup = Supervisor(child("basic"))
    sup.start()
    pid, sock = sup.pid, sup.notify_socket
    began = time.monotonic()
    sup.close()
    assert time.monotonic() - began < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not os.path.exists(sock)
    assert not sup._thread.is_alive()
