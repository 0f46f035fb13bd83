"""services/nbd.py: the image-store catalog, the listening lifecycle, and what the service
tells the app (live sessions, status, metrics) after real nbdinfo and nbdcopy sessions."""

import os
import socket
import subprocess
import sys
import time

from tests.support.nbd import PEER_CWD, ROOT, DirImages, Server, load_libnbd, peer_env, recv_exact

sys.path.insert(0, str(ROOT))
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from bootserverd.config.settings import Listen, NbdConfig  # noqa: E402
from nbd.admission import Admission  # noqa: E402
from nbd.exports import ExportCatalog  # noqa: E402
from nbd.listener import NBDFactory, open_export  # noqa: E402
from nbd.transmission import SessionRecord  # noqa: E402
from services.nbd import NBDService  # noqa: E402

SIZE = 3 << 20


def test_catalog_follows_the_directory_live_and_holds_the_open_file(tmp_path):
    cat = ExportCatalog(DirImages(tmp_path), open_export)
    assert cat.names() == []
    (tmp_path / "a.img").write_bytes(b"x" * 1000)
    assert cat.names() == ["a"]
    info = cat.lookup("a")
    assert (info.name, info.size, info.description) == ("a", 1000, "test amd64")
    opened = cat.open("a")
    try:
        (tmp_path / "a.img").unlink()
        assert cat.names() == [] and cat.lookup("a") is None and cat.open("a") is None
        assert opened.size == 1000 and os.pread(opened.fd, 3, 0) == b"xxx"
    finally:
        os.close(opened.fd)


def test_catalog_open_of_a_vanished_file_is_unknown_not_a_crash(tmp_path):
    class Racy(DirImages):
        def get(self, name):      # the store still lists a file that is already gone
            from types import SimpleNamespace
            return SimpleNamespace(name=name, path=tmp_path / "gone.img", size=1,
                                   series=None, version=None, arch=None)
    assert ExportCatalog(Racy(tmp_path), open_export).open("gone") is None


def test_service_listens_where_configured_and_only_when_enabled(tmp_path):
    reactor = MemoryReactorClock()
    records = []
    svc = NBDService(NbdConfig(listen=Listen("127.0.0.1", 10809), max_connections=7,
                               max_connections_per_client=2, handshake_timeout=3.0),
                     DirImages(tmp_path), reactor=reactor, on_transfer=records.append)
    svc.startService()
    port, factory, backlog, interface = reactor.tcpServers[0]
    assert (port, interface, backlog) == (10809, "127.0.0.1", 511)
    assert (factory.admission.max_connections, factory.admission.max_per_client,
            factory.handshake_timeout) == (7, 2, 3.0)
    assert svc.status() == {"connections": 0, "sessions": {}, "refused": 0} and svc.live_sessions() == []
    svc.stopService()

    off = NBDService(NbdConfig(enabled=False), DirImages(tmp_path), reactor=MemoryReactorClock())
    off.startService()
    assert off.address is None and off.reactor.tcpServers == []


def test_send_threads_follow_sighup(tmp_path):
    svc = NBDService(NbdConfig(listen=Listen("127.0.0.1", 0)), DirImages(tmp_path), reactor=MemoryReactorClock())
    svc.startService()
    try:
        assert svc.send_pool.active and svc.send_pool.threads == NbdConfig.send_threads
        svc.reconfigure(NbdConfig(listen=Listen("127.0.0.1", 0), send_threads=0))
        assert not svc.send_pool.active          # the event loop sends everything
        svc.reconfigure(NbdConfig(listen=Listen("127.0.0.1", 0), send_threads=3))
        assert svc.send_pool.active and svc.send_pool.threads == 3
    finally:
        svc.stopService()
    assert not svc.send_pool.active


def test_on_session_errors_are_contained(tmp_path):
    def boom(record):
        raise RuntimeError("metrics broke")
    f = NBDFactory(ExportCatalog(DirImages(tmp_path), open_export), MemoryReactorClock(), Admission(),
                   on_session=boom)
    f.connection_ended(object(), SessionRecord("127.0.0.1:1", "a", 10, 1, 0.5, "done"))   # must not raise


def wait_for(read, want, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (got := read()) != want and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_metrics_live_sessions_and_status_follow_real_clients(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "alpha.img").write_bytes(data := os.urandom(SIZE))
    server = Server(tmp_path / "img", tmp_path / "server.log", "--observe", "--max-per-client", "8")
    sent = lambda: server.metric("bootserverd_sent_bytes_total", service="nbd")   # noqa: E731
    sessions = lambda outcome: server.metric("bootserverd_transfers_total", service="nbd",  # noqa: E731
                                             outcome=outcome) or 0
    connections = lambda: server.metric("bootserverd_nbd_connections")   # noqa: E731
    try:
        assert (connections(), sent(), sessions("done")) == (0, 0, 0)

        # nbdinfo: one session, attached to the export, ended by the client.
        r = subprocess.run(["nbdinfo", server.uri("alpha")], env=peer_env(), cwd=PEER_CWD,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and f"export-size: {SIZE}" in r.stdout, r.stderr
        assert wait_for(lambda: sessions("done"), 1) == 1
        # nbdinfo --list: a session that never attached to an export.
        subprocess.run(["nbdinfo", "--list", server.uri()], env=peer_env(), cwd=PEER_CWD,
                       capture_output=True, timeout=60, check=True)
        assert wait_for(lambda: sessions("no_export"), 1) == 1
        probed = sent()                              # nbdinfo may read a little (its content probe)

        # nbdcopy: every byte of the export counted, on as many connections as it opens.
        out = tmp_path / "copy.img"
        r = subprocess.run(["nbdcopy", server.uri("alpha"), str(out)], env=peer_env(), cwd=PEER_CWD,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and out.read_bytes() == data, r.stderr
        assert wait_for(sent, probed + SIZE) == probed + SIZE
        assert sessions("done") >= 2 and sessions("aborted") == 0
        assert wait_for(connections, 0) == 0

        # A connection held open shows in the gauge, in status() and (once attached) in live_sessions().
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        assert recv_exact(raw, 18)[:8] == b"NBDMAGIC"
        assert wait_for(connections, 1) == 1
        libnbd = load_libnbd()
        h = libnbd.NBD()
        h.connect_uri(server.uri("alpha"))
        assert h.pread(4096, 8192) == data[8192:12288]
        view = server.sessions()
        ended = view["status"]["sessions"]
        assert ended["done"] >= 2 and ended["no_export"] == 1 and "aborted" not in ended
        assert (view["status"]["connections"], view["status"]["refused"]) == (2, 0)
        (live,) = view["live"]                       # the raw socket has not chosen an export
        assert (live["client"], live["export"], live["bytes_sent"]) == ("127.0.0.1", "alpha", 4096)
        assert live["started"] > 0
        raw.close()                                  # mid-negotiation: not a finished session
        h.shutdown()
        assert wait_for(connections, 0) == 0
        assert sent() == probed + SIZE + 4096
        after = server.sessions()
        assert (after["status"]["connections"], after["status"]["refused"], after["live"]) == (0, 0, [])
        assert after["status"]["sessions"]["done"] == ended["done"] + 1        # the libnbd session
    finally:
        server.stop()
