"""Hot swap: connected clients keep reading the exact bytes they started with while a
new version is published and the old file is deleted."""

import os
import threading
import time

from tests.support.nbd import Server, load_libnbd, random_reads

CLIENTS = 32
SIZE = 16 << 20


def test_32_readers_see_only_the_old_bytes_across_publish_and_delete(tmp_path):
    libnbd = load_libnbd()
    images = tmp_path / "images"
    images.mkdir()
    old = os.urandom(SIZE)
    new = os.urandom(SIZE)
    (images / "live.img").write_bytes(old)
    server = Server(images, tmp_path / "server.log", "--max-per-client", "64")
    stop = threading.Event()
    deleted = threading.Event()
    stats = [dict(reads=0, errors=0, wrong=0, after=0) for _ in range(CLIENTS)]
    handles = []
    try:
        for _ in range(CLIENTS):
            h = libnbd.NBD()
            h.connect_uri(server.uri("live"))
            handles.append(h)

        def reader(i):
            stats[i] = random_reads(libnbd, handles[i], old, stop, seed=i, seconds=20, after=deleted)

        threads = [threading.Thread(target=reader, args=(i,), daemon=True)
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        # A new version published under the same name (atomic rename over the old file)...
        tmp = images / ".live.img.tmp"
        tmp.write_bytes(new)
        os.replace(tmp, images / "live.img")
        # ...a new client now gets the new bytes, while the old ones keep the old.
        fresh = libnbd.NBD()
        fresh.connect_uri(server.uri("live"))
        assert fresh.pread(4096, 8192) == new[8192:12288]
        fresh.shutdown()
        time.sleep(0.7)
        # ...and then the file is deleted altogether (a new name is published instead).
        (images / "live.img").unlink()
        (images / "live-v2.img").write_bytes(new)
        deleted.set()
        time.sleep(0.7)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads)

        total = sum(s["reads"] for s in stats)
        assert sum(s["errors"] for s in stats) == 0
        assert sum(s["wrong"] for s in stats) == 0
        assert all(s["reads"] > 0 and s["after"] > 0 for s in stats), stats
        assert total > CLIENTS * 5

        # The deleted export is gone for newcomers; the new name is there at once.
        gone = libnbd.NBD()
        try:
            gone.connect_uri(server.uri("live"))
            raise AssertionError("deleted export still served to a new client")
        except libnbd.Error:
            pass
        v2 = libnbd.NBD()
        v2.connect_uri(server.uri("live-v2"))
        assert v2.pread(4096, 0) == new[:4096]
        v2.shutdown()
        for h in handles:
            assert h.pread(16, SIZE - 16) == old[-16:]
            h.shutdown()
        server.wait_log("disconnected")
    finally:
        stop.set()
        server.stop()
