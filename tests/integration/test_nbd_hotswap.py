"""Hot swap: connected clients keep reading the exact bytes they started with while a
new version is published and the old file is deleted."""

import os
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nbd_support import Server, load_libnbd  # noqa: E402

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
    phase = {"value": "before"}
    stats = [dict(reads=0, errors=0, wrong=0, after_delete=0) for _ in range(CLIENTS)]
    handles = []
    try:
        for _ in range(CLIENTS):
            h = libnbd.NBD()
            h.connect_uri(server.uri("live"))
            handles.append(h)

        def reader(i):
            rng = random.Random(i)
            h, st = handles[i], stats[i]
            deadline = time.monotonic() + 20          # bounded even if the main thread dies
            while not stop.is_set() and time.monotonic() < deadline:
                n = rng.randrange(1, 256) * 1024
                off = rng.randrange(0, SIZE - n + 1)
                try:
                    got = h.pread(n, off)
                except libnbd.Error:
                    st["errors"] += 1
                    continue
                st["reads"] += 1
                if got != old[off:off + n]:
                    st["wrong"] += 1
                if phase["value"] == "deleted":
                    st["after_delete"] += 1

        threads = [threading.Thread(target=reader, args=(i,), daemon=True)
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        # A new version published under the same name (atomic rename over the old file)...
        tmp = images / ".live.img.tmp"
        tmp.write_bytes(new)
        os.replace(tmp, images / "live.img")
        phase["value"] = "replaced"
        # ...a new client now gets the new bytes, while the old ones keep the old.
        fresh = libnbd.NBD()
        fresh.connect_uri(server.uri("live"))
        assert fresh.pread(4096, 8192) == new[8192:12288]
        fresh.shutdown()
        time.sleep(0.7)
        # ...and then the file is deleted altogether (a new name is published instead).
        (images / "live.img").unlink()
        (images / "live-v2.img").write_bytes(new)
        phase["value"] = "deleted"
        time.sleep(0.7)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        assert not any(t.is_alive() for t in threads)

        total = sum(s["reads"] for s in stats)
        assert sum(s["errors"] for s in stats) == 0
        assert sum(s["wrong"] for s in stats) == 0
        assert all(s["reads"] > 0 and s["after_delete"] > 0 for s in stats), stats
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
