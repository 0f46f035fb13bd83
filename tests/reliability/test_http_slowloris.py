"""Slowloris against the HTTP listener, on loopback: hundreds of connections from one address,
then from many 127.x addresses, each sending its request headers one byte at a time.
``http.max_connections_per_client`` holds per address (the rest get a 429 at once),
``http.header_timeout`` cuts every trickling connection, memory stays bounded, refusals are
logged once a minute per address, and legitimate curl downloads meanwhile all succeed."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
import time


from tests.reliability import figures
from tests.support.http import Daemon, sha256
from tests.support.images import build_image

IMAGE = "slow-2026-01-01-000000-amd64"
PER_CLIENT, HEADER_TIMEOUT = 16, figures.scale(2.0, 5.0)


def open_slow(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` connections from ``host`` that start a request and never finish its headers."""
    socks = []
    for _ in range(count):
        s = socket.socket()
        s.settimeout(5)
        s.bind((host, 0))
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(f"GET /images/{IMAGE}.img HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
        except OSError:                   # refused and closed already
            pass
        socks.append(s)
        if len(socks) % 100 == 0:
            time.sleep(0.02)              # let the reactor accept: a full backlog costs a 1 s SYN retry
    return socks


def state(s: socket.socket) -> str:
    """'open' (nothing from the server), 'refused' (a 429) or 'closed' (cut without a word)."""
    s.settimeout(0)
    try:
        data = s.recv(4096)
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    if data.startswith(b"HTTP/1.1 429"):
        return "refused"
    return "closed" if not data else f"answered {data[:40]!r}"


def trickle(socks: list[socket.socket], seconds: float) -> None:
    """One header byte per connection every 0.25 s, for ``seconds`` (bounded)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for s in socks:
            try:
                s.send(b"a")
            except OSError:
                pass
        time.sleep(0.25)


def test_slowloris(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    build_image(images / f"{IMAGE}.img", extra={"/filler": os.urandom(figures.scale(16, 64) << 20)})
    image = images / f"{IMAGE}.img"
    d = Daemon(tmp_path / "d", images, http_extra=f"  max_connections_per_client: {PER_CLIENT}\n"
                                                  f"  header_timeout: {HEADER_TIMEOUT}\n")
    legit = {"ok": 0, "failed": 0, "seconds": []}
    stop = threading.Event()

    def downloads():
        """Legitimate clients from their own address, one download after another."""
        n = 0
        while not stop.is_set() and n < 200:
            n += 1
            out = tmp_path / "legit.img"
            began = time.monotonic()
            r = subprocess.run(["curl", "-sf", "--max-time", "30", "-o", str(out), d.url(f"/images/{IMAGE}.img")],
                               capture_output=True)
            ok = r.returncode == 0 and sha256(out) == sha256(image)
            legit["ok" if ok else "failed"] += 1
            legit["seconds"].append(time.monotonic() - began)

    try:
        pid = d.proc.pid
        before = figures.rss_kib(pid)
        worker = threading.Thread(target=downloads)
        worker.start()
        # 1. one address opens many connections
        one_count = figures.scale(200, 1000)
        started = time.monotonic()
        one = open_slow("127.0.0.5", d.port, one_count)
        time.sleep(0.3)
        one_states = [state(s) for s in one]
        # the count below means something only if no connection was cut yet
        assert time.monotonic() - started < HEADER_TIMEOUT, "opening took longer than header_timeout"
        held_one = one_states.count("open")
        refused_one = one_states.count("refused")
        # 2. many addresses, each up to the cap
        addresses = [f"127.0.4.{i}" for i in range(1, figures.scale(12, 60) + 1)]
        opened = time.monotonic()
        many = [s for host in addresses for s in open_slow(host, d.port, PER_CLIENT)]
        time.sleep(0.3)
        held_many = [state(s) for s in many].count("open")
        assert time.monotonic() - opened < HEADER_TIMEOUT, "opening took longer than header_timeout"
        during = figures.rss_kib(pid)
        open_now = [s for s, st in zip(one, one_states) if st == "open"] + many
        trickle(open_now, HEADER_TIMEOUT + 1.5)
        cut = [state(s) for s in open_now]
        cut_after = time.monotonic() - started
        stop.set()
        worker.join(60)
        for s in one + many:
            s.close()
        after = figures.rss_kib(pid)
        peak = figures.peak_rss_kib(pid)
        status = d.json("/status")["http"]
        log = d.log()
    finally:
        stop.set()
        d.stop()
    refusal_lines = len(re.findall(r"refused with 429", log))
    cut_lines = len(re.findall(r"no complete request within", log))
    assert held_one == PER_CLIENT and refused_one == one_count - PER_CLIENT, {st: one_states.count(st) for st in set(one_states)}
    assert held_many == len(many), "a connection within the cap was refused"
    assert all(st == "closed" for st in cut), {st: cut.count(st) for st in set(cut)}
    assert legit["failed"] == 0 and legit["ok"] >= 1, legit
    growth = (during - before) / 1024
    assert growth < 32, f"RSS grew {growth:.1f} MiB"
    assert refusal_lines == 1, refusal_lines                   # one address, once a minute
    assert 1 <= cut_lines <= len(addresses) + 1, cut_lines      # per address, not per connection
    assert status["refused_too_many"] == refused_one and status["cut_header_timeout"] == len(open_now)
    assert "Traceback" not in log
    figures.record("http_slowloris", "Slowloris: connections trickling header bytes (loopback)", [
        ("from one address", f"{one_count} connections: {held_one} held (max_connections_per_client "
                             f"{PER_CLIENT}), {refused_one} answered 429 at once"),
        ("from many addresses", f"{len(addresses)} addresses × {PER_CLIENT}: {held_many} of {len(many)} held"),
        ("cut by header_timeout", f"all {len(open_now)} trickling connections, one byte each 0.25 s, "
                                  f"closed by {cut_after:.1f} s (header_timeout {HEADER_TIMEOUT} s)"),
        ("legitimate curl downloads meanwhile", f"{legit['ok']} of {legit['ok'] + legit['failed']} complete, "
                                                f"sha256 verified, {image.stat().st_size >> 20} MiB each, "
                                                f"slowest {max(legit['seconds']):.2f} s"),
        ("daemon RSS", f"{before / 1024:.0f} MiB before, {during / 1024:.0f} MiB with all connections, "
                       f"{after / 1024:.0f} MiB after, peak {peak / 1024:.0f} MiB"),
        ("log lines", f"{refusal_lines} for {refused_one} refusals, {cut_lines} for {len(open_now)} cuts "
                      "(once a minute per address and kind, with a count)")])
