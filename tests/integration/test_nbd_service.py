"""services/nbd.py: the image-store catalog and the service's listening lifecycle."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbd_support import ROOT, DirImages  # noqa: E402

sys.path.insert(0, str(ROOT))
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

from bootserverd.config.settings import Listen, NbdConfig  # noqa: E402
from nbd.protocol import SessionRecord  # noqa: E402
from services.nbd import ImageCatalog, NBDService  # noqa: E402


def test_catalog_follows_the_directory_live_and_holds_the_open_file(tmp_path):
    cat = ImageCatalog(DirImages(tmp_path))
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
        opened.close()
    assert opened.fd == -1


def test_catalog_open_of_a_vanished_file_is_unknown_not_a_crash(tmp_path):
    class Racy(DirImages):
        def get(self, name):      # the store still lists a file that is already gone
            from types import SimpleNamespace
            return SimpleNamespace(name=name, path=tmp_path / "gone.img", size=1,
                                   series=None, version=None, arch=None)
    assert ImageCatalog(Racy(tmp_path)).open("gone") is None


def test_service_listens_where_configured_and_only_when_enabled(tmp_path):
    reactor = MemoryReactorClock()
    records = []
    svc = NBDService(NbdConfig(listen=Listen("127.0.0.1", 10809), max_connections=7,
                               max_connections_per_client=2, handshake_timeout=3.0),
                     DirImages(tmp_path), reactor=reactor, on_session=records.append)
    svc.startService()
    port, factory, backlog, interface = reactor.tcpServers[0]
    assert (port, interface) == (10809, "127.0.0.1")
    assert (factory.max_connections, factory.max_per_client, factory.handshake_timeout) == (
        7, 2, 3.0)
    svc.stopService()

    off = NBDService(NbdConfig(enabled=False), DirImages(tmp_path), reactor=MemoryReactorClock())
    off.startService()
    assert off.address is None and off.reactor.tcpServers == []


def test_on_session_receives_a_record_and_its_errors_are_contained(tmp_path):
    from nbd.protocol import NBDFactory
    got = []
    f = NBDFactory(ImageCatalog(DirImages(tmp_path)), MemoryReactorClock(), on_session=got.append)

    class P:
        host = "127.0.0.1"
    p = P()
    f.connections.add(p)
    f.per_client["127.0.0.1"] += 1
    rec = SessionRecord("127.0.0.1:1", "a", 10, 1, 0.5, "done")
    f.connection_ended(p, rec)
    assert got == [rec] and not f.connections and not f.per_client

    def boom(record):
        raise RuntimeError("metrics broke")
    f.on_session = boom
    f.connection_ended(p, rec)      # must not raise into the reactor
