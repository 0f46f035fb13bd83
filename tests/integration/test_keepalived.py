"""The service address follows the live server (etc/keepalived.conf.example, as shipped but
for the interface and addresses): two namespaces on a bridge, each with the real daemon and
keepalived tracking its /healthz. Killing A's daemon moves the address to B within seconds;
a client reaching the service address is then answered by B."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest

from tests.support.config import write_config
from tests.support.dhcp_lab import ROOT, PY
from tests.support.keepalived import holds, keepalived_argv, keepalived_conf, seconds_until as wait
from tests.support.netns import bridge, namespaces

A_IP, B_IP, VIP = "10.60.0.2", "10.60.0.3", "10.60.0.1"


def holds_vip(ns) -> bool:
    return holds(ns, "s0", VIP)


def served_by(client) -> str | None:
    """Which server answers at the service address (its pair.this_server), None if none."""
    r = client.run(["curl", "-sf", "-m", "1", f"http://{VIP}:8080/status"], timeout=5)
    return json.loads(r.stdout)["peer"]["this_server"] if r.returncode == 0 else None


def peer_of(ns) -> dict:
    """The /status peer section of the daemon in `ns`."""
    r = ns.run(["curl", "-sf", "-m", "1", "http://127.0.0.1:8080/status"], timeout=5)
    return json.loads(r.stdout)["peer"] if r.returncode == 0 else {}


@pytest.fixture
def pair(tmp_path):
    with namespaces("ksw", "kpa", "kpb", "kcl") as (sw, ka, kb, cl):
        bridge(sw, [(ka, "s0", "ka"), (kb, "s0", "kb"), (cl, "c0", "kc")])
        ka.ip("addr", "add", f"{A_IP}/24", "dev", "s0")
        kb.ip("addr", "add", f"{B_IP}/24", "dev", "s0")
        cl.ip("addr", "add", "10.60.0.9/24", "dev", "c0")
        # one bootserverd.yaml for both; each finds itself in pair.servers by its address
        config = write_config(tmp_path, server={"address": VIP, "state_dir": "../state"},
                              http={"enabled": True, "listen": "0.0.0.0:8080"},
                              nbd={"enabled": True, "listen": "0.0.0.0:10809"},
                              pair={"servers": [A_IP, B_IP], "check_interval": 1})
        procs: dict[str, subprocess.Popen] = {}
        try:
            for name, ns, priority in (("a", ka, 150), ("b", kb, 100)):
                state = tmp_path / f"state-{name}"
                state.mkdir()
                own = config.parent / f"{name}.yaml"    # relative paths as in the shared file
                own.write_text(config.read_text().replace("../state", str(state)))
                own_log = open(tmp_path / f"{name}.log", "w")
                procs[f"daemon-{name}"] = ns.popen([PY, "-m", "bootserverd", "run", "--config",
                                                    str(own)], cwd=ROOT, stdout=own_log,
                                                   stderr=subprocess.STDOUT)
                conf = tmp_path / f"keepalived-{name}.conf"
                conf.write_text(keepalived_conf("s0", VIP, priority))
                procs[f"keepalived-{name}"] = ns.popen(
                    keepalived_argv(conf, tmp_path, name),
                    stdout=open(tmp_path / f"keepalived-{name}.log", "w"), stderr=subprocess.STDOUT)
            yield ka, kb, cl, procs, tmp_path
        finally:
            for name, proc in procs.items():      # ours, by PID
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def test_service_address_moves_to_b_when_a_dies(pair):
    ka, kb, cl, procs, tmp = pair
    logs = lambda: "\n".join(p.read_text() for p in sorted(tmp.glob("*.log")))
    assert wait(lambda: holds_vip(ka), 20) is not None, logs()     # the first election: A
    assert wait(lambda: served_by(cl) == A_IP, 10) is not None, logs()
    assert not holds_vip(kb)
    # each found itself in the shared pair.servers and reaches the other at its own address
    assert wait(lambda: peer_of(kb).get("reachable") is True, 10) is not None, logs()
    assert peer_of(kb)["url"] == f"http://{A_IP}:8080" and peer_of(ka)["this_server"] == A_IP
    assert cl.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                   f"http://{VIP}:8080/healthz"]).stdout == "200"

    procs["daemon-a"].kill()                       # A's daemon dies (its PID); keepalived stays
    procs["daemon-a"].wait(5)
    moved = wait(lambda: holds_vip(kb), 15)
    assert moved is not None, logs()
    answered = wait(lambda: served_by(cl) == B_IP, 10)
    assert answered is not None, logs()
    assert not holds_vip(ka)                       # one holder, never two
    assert wait(lambda: peer_of(kb).get("reachable") is False, 5) is not None
    assert moved < 8, f"the address took {moved:.1f} s to move"
    print(f"service address on B {moved:.1f} s after kill -9 of A's daemon; "
          f"the client reached B {moved + answered:.1f} s after")
