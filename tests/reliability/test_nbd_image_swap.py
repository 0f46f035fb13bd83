"""The image file replaced, then deleted, under 32 NBD readers of the daemon as shipped:
every reader keeps getting the bytes of the version it attached to, with 0 read errors,
while a new client gets the new version (issue 10: faults)."""

from __future__ import annotations

import os
import threading
import time

from tests.reliability import figures
from tests.support.images import build_image
from tests.support.nbd import load_libnbd, random_reads
from tests.support.reliability import IMAGE, log_lines, start_daemon, wait_until

READERS = 32


def test_image_replaced_and_deleted_under_32_readers(tmp_path):
    libnbd = load_libnbd()
    daemon, ports = start_daemon(tmp_path, image_mb=figures.scale(8, 64),
                                 nbd={"max_connections_per_client": 64})
    uri = f"nbd://127.0.0.1:{ports['nbd']}/{IMAGE}"
    path = tmp_path / "images" / f"{IMAGE}.img"
    old = path.read_bytes()
    phase_seconds = figures.scale(1.5, 10.0)
    stop = threading.Event()
    stats = [dict(reads=0, errors=0, wrong=0, after=0) for _ in range(READERS)]
    deleted = threading.Event()
    handles = []
    try:
        for _ in range(READERS):
            h = libnbd.NBD()
            h.connect_uri(uri)
            handles.append(h)

        def reader(i):
            stats[i] = random_reads(libnbd, handles[i], old, stop, seed=i, seconds=6 * phase_seconds + 30,
                                    max_kib=128, after=deleted)

        threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(READERS)]
        for t in threads:
            t.start()
        time.sleep(phase_seconds)

        # A new version under the same name: built beside, renamed over the old file.
        staged = build_image(tmp_path / "staging.img", extra={"/filler": os.urandom(1 << 20)})
        new = staged.read_bytes()
        os.replace(staged, path)

        def fresh_reads_new() -> bool:
            fresh = libnbd.NBD()
            try:
                fresh.connect_uri(uri)
                return fresh.pread(4096, 0) == new[:4096] and fresh.get_size() == len(new)
            except libnbd.Error:
                return False
            finally:
                del fresh   # libnbd closes the handle when it is collected
        switched_at = time.monotonic()
        assert wait_until(fresh_reads_new, 15), "a new client never saw the replaced image"
        switch_seconds = time.monotonic() - switched_at
        time.sleep(phase_seconds)

        # Then the file is deleted altogether.
        log_lines(daemon)   # consume what the replacement logged
        path.unlink()
        deleted.set()
        assert daemon.wait_for(f"image {IMAGE} retired", timeout=15)
        refused = libnbd.NBD()
        try:
            refused.connect_uri(uri)
            still_exported = True
        except libnbd.Error:
            still_exported = False
        time.sleep(phase_seconds)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)
    finally:
        stop.set()
        for h in handles:
            try:
                h.shutdown()
            except Exception:
                pass
        lines = log_lines(daemon)
        daemon.stop()

    reads = sum(s["reads"] for s in stats)
    errors = sum(s["errors"] for s in stats)
    wrong = sum(s["wrong"] for s in stats)
    after_delete = sum(s["after"] for s in stats)
    assert not still_exported, "a deleted image was still offered to a new client"
    assert errors == 0 and wrong == 0, (errors, wrong)
    assert all(s["after"] > 0 for s in stats), "a reader stalled after the delete"
    assert "Traceback" not in "\n".join(lines)
    figures.record("nbd_image_swap", "Image replaced and deleted under 32 NBD readers (daemon as shipped)", [
        ("readers", f"{READERS} libnbd connections, random reads of 1-127 KiB"),
        ("reads", f"{reads:,} ({after_delete:,} after the file was deleted)"),
        ("read errors / wrong bytes", f"{errors} / {wrong}"),
        ("replaced under the same name", f"a new client read the new version {switch_seconds:.2f} s after the rename"),
        ("deleted", "a new client is refused the export; attached readers unaffected")])
