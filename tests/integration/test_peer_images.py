"""Two real daemons on loopback, each the other's peer (pair.*): each names the images its
peer lacks or holds with other bytes, once per change, in its log and /status; it says when
the peer catches up and when the peer is gone. /healthz answers for keepalived."""

from __future__ import annotations

import json
import shutil
import time
import urllib.error
import urllib.request

from tests.support.config import free_port, write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

SAME, ONLY_A, DIFFERS = ("bookworm-2026-11-01-080000-amd64", "bookworm-2026-11-20-080000-amd64",
                         "lab-2026-11-10-080000-amd64")


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def peer_status(port: int) -> dict:
    return get(f"http://127.0.0.1:{port}/status")[1]["peer"]


def site(tmp, name: str, port: int, peer_port: int, images: dict):
    root = tmp / name
    root.mkdir()
    config = write_config(root, http={"enabled": True, "listen": f"127.0.0.1:{port}"},
                          images={"dir": "../images", "settle_seconds": 0, "rescan_interval": 1},
                          pair={"servers": ["127.0.0.1", "127.0.0.2"],
                                "this_server": "127.0.0.1" if name == "a" else "127.0.0.2",
                                "peer_url": f"http://127.0.0.1:{peer_port}", "check_interval": 1})
    for image, path in images.items():
        shutil.copy2(path, root / "images" / f"{image}.img")
    return config


def test_each_daemon_names_its_peers_missing_and_differing_images(tmp_path):
    made = tmp_path / "made"
    made.mkdir()
    files = {name: build_image(made / f"{name}.img") for name in (SAME, ONLY_A, DIFFERS)}
    other = build_image(made / "other.img")          # DIFFERS with other bytes on B
    port_a, port_b = free_port(), free_port()
    config_a = site(tmp_path, "a", port_a, port_b, files)
    config_b = site(tmp_path, "b", port_b, port_a, {SAME: files[SAME], DIFFERS: other})
    url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    with Daemon(config_a) as a, Daemon(config_b) as b:
        a.wait_for("bootserverd started", 20)
        b.wait_for("bootserverd started", 20)
        assert f"image {ONLY_A} is missing on the peer" in a.wait_for("is missing on the peer", 15)
        line = a.wait_for("differs on the peer", 5)
        assert f"peer {url_b}: image {DIFFERS} differs on the peer (sha256 " in line
        b.wait_for(f"image {DIFFERS} differs on the peer", 15)
        b.wait_for(f"image {ONLY_A} is on the peer only", 5)

        status = peer_status(port_a)
        assert status["url"] == url_b and status["reachable"] is True and status["error"] is None
        assert status["missing"] == [ONLY_A] and status["differing"] == [DIFFERS]
        assert status["same"] == 1 and status["last_check"] > time.time() - 10
        checks = status["checks"]
        deadline = time.monotonic() + 10
        while peer_status(port_a)["checks"] < checks + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert peer_status(port_a)["checks"] >= checks + 3
        # three more polls, the same state: nothing more in the log
        lines = "\n".join(a.lines)
        assert lines.count("is missing on the peer") == 1 and lines.count("differs on the peer") == 1

        # the sysadmin copies the missing image to B: A says so once
        shutil.copy2(files[ONLY_A], tmp_path / "b" / "images" / f"{ONLY_A}.img")
        a.wait_for(f"image {ONLY_A} is now the same on the peer", 15)
        assert peer_status(port_a)["missing"] == []

        code, body = get(f"{url_a}/healthz")
        assert (code, body) == (200, {"ok": True, "down": []})

        _drain(a)
        before = len(a.lines)
        b.stop()                                      # the peer is gone: one line, /status says so
        assert f"peer {url_b}: unreachable (" in a.wait_for("unreachable", 10)
        deadline = time.monotonic() + 10
        while peer_status(port_a)["reachable"] is not False and time.monotonic() < deadline:
            time.sleep(0.2)
        status = peer_status(port_a)
        assert status["reachable"] is False and status["error"]
        time.sleep(2.5)                               # more failed polls: still one line
        _drain(a)
        assert "\n".join(a.lines[before:]).count("unreachable") == 1
        assert get(f"{url_a}/healthz")[0] == 200      # a dead peer does not make A unfit

        with Daemon(config_b) as b_again:             # the peer returns: A says so, once
            b_again.wait_for("bootserverd started", 20)
            a.wait_for(f"peer {url_b}: reachable, ", 10)
            assert peer_status(port_a)["reachable"] is True


def _drain(daemon: Daemon) -> list[str]:
    """Lines the daemon logged since the last wait_for, without waiting."""
    out = []
    while not daemon._queue.empty():
        line = daemon._queue.get_nowait()
        if line is None:
            break
        daemon.lines.append(line)
        out.append(line)
    return out
