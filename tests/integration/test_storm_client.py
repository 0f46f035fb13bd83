"""The storm benchmark's parts do what its figures rely on: the C client (tests/bench/storm_client.c)
opens one NBD session per client from its own 127.x address, replays a trace's reads in order and
catches a server's wrong bytes; the desktop trace generator keeps the real trace's request sizes
within the image. No timing asserted (the figures live in docs/benchmarks.md)."""

import json
import os
import subprocess
import sys

from tests.support.nbd import ROOT, Server

sys.path.insert(0, str(ROOT))
from nbd import codec as c
from nbd.trace import Recorder, parse

BENCH = ROOT / "tests" / "bench"


def build_client(tmp_path):
    exe = tmp_path / "storm_client"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(exe), str(BENCH / "storm_client.c")],
                   check=True, timeout=120)
    return exe


def test_every_client_has_its_own_address_and_every_byte_is_checked(tmp_path):
    exe = build_client(tmp_path)
    (tmp_path / "img").mkdir()
    image = tmp_path / "img" / "alpha.img"
    image.write_bytes(os.urandom(4 << 20))
    reads = tmp_path / "reads.txt"
    pattern = [(0, 4096), (1 << 20, 131072), (12288, 512), ((4 << 20) - 4096, 4096), (65536, 65536)]
    reads.write_text("".join(f"{o} {n}\n" for o, n in pattern))
    hashes = tmp_path / "hashes.txt"
    subprocess.run([str(exe), "hash", str(image), str(reads), str(hashes)], check=True, timeout=30)
    server = Server(tmp_path / "img", tmp_path / "server.log", "--max-per-client", "1")
    try:
        run = [str(exe), "run", "127.0.0.1", str(server.port), "alpha", str(reads), str(hashes), "6", "127.1.0.1", "30"]
        r = subprocess.run(run, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        res = json.loads(r.stdout)
        assert (res["clients"], res["errors"], res["never_opened"]) == (6, 0, 0)
        assert res["bytes"] == 6 * sum(n for _, n in pattern) and res["reads_per_client"] == len(pattern)
        assert 0 < res["all_open_s"] <= res["done_max_s"]
        # one connection per client address (max_connections_per_client is 1 here)
        log = server.log_text()
        for i in range(1, 7):
            assert f"NBD 127.1.0.{i}:" in log, log

        # A server whose bytes differ from the image the hashes came from is caught.
        image.write_bytes(os.urandom(4 << 20))
        bad = subprocess.run(run[:-3] + ["2", "127.1.0.1", "30"], capture_output=True, text=True, timeout=60)
        res = json.loads(bad.stdout)
        assert bad.returncode == 1 and res["errors"] == 2 and res["first_error"] == "wrong bytes"
    finally:
        server.stop()


def test_desktop_trace_repeats_the_real_pattern_over_a_larger_image(tmp_path):
    sys.path.insert(0, str(BENCH / "traces"))
    from make_desktop_trace import make
    real = Recorder("debian", "10.0.0.5:1", 1_796_198_398.0)
    for i, (t, o, n) in enumerate([(0.1, 0, 4096), (0.2, 10 << 20, 131072), (0.3, 50 << 20, 65536)]):
        real.add(t, [(0, c.CMD_READ, i, o, n)])
    path = tmp_path / "real.trace"
    path.write_text(real.encode())
    text = make(path, 1 << 30, 2_000_000)
    trace = parse(text)
    assert "SYNTHETIC" in trace.header["image"]
    reads = trace.reads
    k = len(reads) // 3
    assert k == 10 and len(reads) == 30                       # 2 MB wanted / 200 KiB per copy
    assert sorted(r.length for r in reads) == sorted([4096, 131072, 65536] * k)
    assert all(r.offset % 4096 == 0 and r.offset + r.length <= 1 << 30 for r in reads)
    assert [r.seconds for r in reads] == sorted(r.seconds for r in reads)
    assert len({r.offset for r in reads}) == 30               # k distinct regions
    assert trace.summary()["distinct_bytes"] == k * (4096 + 131072 + 65536)
