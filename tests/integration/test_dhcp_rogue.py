"""Rogue DHCP servers, in namespaces made here: the shipped daemon (`python -m bootserverd run`,
HTTP on the namespace's loopback) serves s0 on a bridge; dnsmasq plays the rogue (a home
router: 192.168.1.1, its own pool) on another port of the bridge; udhcpc is a client on a
third. Read back through /status, /metrics and the log.

(a) passive: the rogue's broadcast answers to a client are seen, one log line for several;
(b) the probe alone (no client) finds it, a fixed MAC, one line; (c) a server listed in
dhcp.known_servers is not flagged; (d) our own replies never are, the probe's MAC gets
nothing from us, and the pools' use shows a client's lease. Without CAP_NET_RAW the watch is
off with one warning and DHCP still served."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from ipaddress import IPv4Address

import pytest

from dhcp.journal import list_leases
from dhcp.rogue import probe_mac
from tests.support import dhcp_lab as lab
from tests.support.netns import namespaces, veth

ROGUE_IP, ROGUE_MAC = "192.168.1.1", "02:52:4f:47:55:45"
CLIENT = "52:54:00:ee:00:01"
PROBE_MAC = probe_mac(IPv4Address("10.50.0.1")).hex(":")
ROGUE_LINE = f"rogue DHCP server {ROGUE_IP} ({ROGUE_MAC}) on s0"


@pytest.fixture
def lan(tmp_path):
    """A switch namespace (bridge br0) with three ports: srv (s0 10.50.0.1/21, the daemon),
    rog (r0, dnsmasq when started) and cli (c0, udhcpc)."""
    with namespaces("rsw", "rsrv", "rrog", "rcli") as (sw, srv, rog, cli):
        sw.ip("link", "add", "br0", "type", "bridge")
        sw.ip("link", "set", "br0", "up")
        for ns, inner, outer, mac in ((srv, "s0", "ps", None), (rog, "r0", "pr", ROGUE_MAC),
                                      (cli, "c0", "pc", None)):
            veth(ns, inner, sw, outer, a_mac=mac)
            sw.ip("link", "set", outer, "master", "br0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        rog.ip("addr", "add", f"{ROGUE_IP}/24", "dev", "r0")
        started: list[subprocess.Popen] = []
        try:
            yield srv, rog, cli, tmp_path, started
        finally:                           # only what this test started, by its own handle
            running = [proc for proc in started if proc.poll() is None]
            for proc in running:
                proc.terminate()               # all at once: they stop side by side
            for proc in running:
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def start_rogue(rog, tmp, started) -> subprocess.Popen:
    log = open(tmp / "dnsmasq.log", "w")
    proc = rog.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                      "--interface=r0", "--bind-interfaces", "--log-dhcp", "--log-facility=-",
                      "--no-ping",           # else each new offer waits ~3 s for an echo
                      "--dhcp-range=192.168.1.100,192.168.1.150,12h", "--dhcp-boot=rogue.0",
                      f"--dhcp-leasefile={tmp / 'dnsmasq.leases'}",
                      f"--pid-file={tmp / 'dnsmasq.pid'}"],
                     stdout=log, stderr=subprocess.STDOUT)
    log.close()
    started.append(proc)
    time.sleep(0.3)
    assert proc.poll() is None, (tmp / "dnsmasq.log").read_text()
    return proc


def start_daemon(srv, tmp, started, extra: str) -> lab.Daemon:
    config = lab.write_config(tmp, lab.SERVER_DHCP + extra)
    config.write_text(config.read_text().replace(
        "http: {enabled: false}", "http: {enabled: true, listen: '127.0.0.1:8080'}"))
    daemon = lab.Daemon(srv, config, tmp / "daemon.log")
    daemon.start()
    started.append(daemon.proc)
    return daemon


def status(srv) -> dict:
    r = srv.run(["curl", "-sf", "http://127.0.0.1:8080/status"], timeout=10)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["dhcp"]


def metrics(srv) -> dict[str, float]:
    """Every sample of /metrics by its full text (name and labels)."""
    r = srv.run(["curl", "-sf", "http://127.0.0.1:8080/metrics"], timeout=10)
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in r.stdout.splitlines() if line and not line.startswith("#")}


def wait_for(what, seconds: float = 8.0, step: float = 0.2):
    """Poll `what()` until it returns something true (bounded); return the last value."""
    deadline = time.monotonic() + seconds
    value = what()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = what()
    return value


def rogue_lines(daemon: lab.Daemon) -> list[str]:
    return [line for line in list(daemon.lines) if "rogue DHCP server" in line]


def test_passive_a_clients_offers_from_the_rogue(lan):
    srv, rog, cli, tmp, started = lan
    daemon = start_daemon(srv, tmp, started, "  rogue_probe_interval: 0\n")
    start_rogue(rog, tmp, started)
    assert status(srv)["rogue_servers"] == []
    for n in range(2):                       # several answers from the rogue, to two clients
        lab.udhcpc(cli, tmp, f"52:54:00:ee:00:0{n + 1}", ["-B"], tries=2, check=False)
    rogues = wait_for(lambda: [r for r in status(srv)["rogue_servers"] if r["offers"] >= 2])
    assert len(rogues) == 1, (tmp / "dnsmasq.log").read_text()[-2000:]
    r = rogues[0]
    assert (r["server_ip"], r["server_mac"], r["interface"]) == (ROGUE_IP, ROGUE_MAC, "s0")
    assert r["offers"] >= 2 and r["boot_file"] == "rogue.0"
    assert IPv4Address("192.168.1.100") <= IPv4Address(r["last_offered"]) <= IPv4Address("192.168.1.150")
    assert r["last_client"] in ("52:54:00:ee:00:01", "52:54:00:ee:00:02")
    assert r["first_seen"] <= r["last_seen"] <= time.time() + 1
    m = metrics(srv)
    assert m["bootserverd_dhcp_rogue_servers"] == 1
    assert m['bootserverd_dhcp_rogue_replies_total{type="offer"}'] == r["offers"]
    assert m['bootserverd_dhcp_rogue_replies_total{type="ack"}'] == r["acks"]
    lines = rogue_lines(daemon)
    assert len(lines) == 1 and ROGUE_LINE in lines[0] and " warning dhcp: rogue DHCP" in lines[0], lines
    assert "offered 192.168.1." in lines[0] and 'boot file "rogue.0"' in lines[0]


def test_the_probe_finds_a_rogue_without_any_client(lan):
    srv, rog, cli, tmp, started = lan
    start_rogue(rog, tmp, started)
    srv.ip("addr", "del", "10.50.0.1/21", "dev", "s0")       # s0 is served once it has one
    daemon = start_daemon(srv, tmp, started, "  rogue_probe_interval: 1\n")
    time.sleep(1.5)
    assert status(srv)["rogue_servers"] == []
    srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
    rogues = wait_for(lambda: [r for r in status(srv)["rogue_servers"] if r["offers"] >= 3])
    assert rogues, (tmp / "daemon.log").read_text()[-2000:]
    r = rogues[0]
    assert (r["server_ip"], r["server_mac"], r["last_client"]) == (ROGUE_IP, ROGUE_MAC, PROBE_MAC)
    lines = rogue_lines(daemon)
    assert len(lines) == 1 and ROGUE_LINE in lines[0] and f"to {PROBE_MAC} (our probe)" in lines[0]
    # a fixed MAC: the rogue offers the same address each time, and never sees a REQUEST
    dnsmasq = (tmp / "dnsmasq.log").read_text()
    offered = {line.split()[-2] for line in dnsmasq.splitlines() if "DHCPOFFER(r0)" in line}
    assert len(offered) == 1 and "DHCPREQUEST" not in dnsmasq, dnsmasq[-2000:]
    assert not (tmp / "dnsmasq.leases").read_text().strip()


def test_a_known_server_is_not_flagged(lan):
    """... until SIGHUP takes it off the list (the watch is reconfigured in place)."""
    srv, rog, cli, tmp, started = lan
    start_rogue(rog, tmp, started)
    daemon = start_daemon(srv, tmp, started, f"  rogue_probe_interval: 1\n"
                                             f"  known_servers: [{ROGUE_IP}]\n")
    offers = wait_for(lambda: (tmp / "dnsmasq.log").read_text().count("DHCPOFFER(r0)") >= 3)
    assert offers, (tmp / "dnsmasq.log").read_text()[-2000:]
    lab.udhcpc(cli, tmp, CLIENT, ["-B"], tries=2, check=False)
    time.sleep(0.5)                          # the last answers reach the daemon's socket
    assert status(srv)["rogue_servers"] == []
    assert metrics(srv)["bootserverd_dhcp_rogue_servers"] == 0
    assert rogue_lines(daemon) == []
    daemon.config.write_text(daemon.config.read_text().replace(f"  known_servers: [{ROGUE_IP}]\n", ""))
    daemon.proc.send_signal(signal.SIGHUP)
    assert wait_for(lambda: status(srv)["rogue_servers"]), (tmp / "daemon.log").read_text()[-2000:]
    assert len(rogue_lines(daemon)) == 1 and "dhcp: configuration applied" in "".join(daemon.lines)


def test_ours_never_flagged_probe_unanswered_and_pool_use(lan):
    srv, rog, cli, tmp, started = lan
    daemon = start_daemon(srv, tmp, started, "  rogue_probe_interval: 1\n")
    got = lab.udhcpc(cli, tmp, CLIENT, ["-B"])       # our OFFER and ACK, broadcast on the LAN
    assert got["ip"] == "10.50.0.100"
    assert wait_for(lambda: status(srv)["rogue_probes"] >= 2)
    dhcp = status(srv)
    assert dhcp["rogue_servers"] == [] and rogue_lines(daemon) == []
    # each probe looped back to our port 67 beside the client's DISCOVER and REQUEST, and got
    # no answer
    assert dhcp["received"] >= dhcp["rogue_probes"] + 2
    assert dhcp["replies"] <= dhcp["received"] - dhcp["rogue_probes"]
    rows = list_leases(tmp / "state" / "leases", all_rows=True)
    assert [mac for mac, *_ in rows] == [CLIENT], rows
    # used 1: an OFFER to the probe would hold a second pool address for 60 s
    assert dhcp["pools"] == [
        {"subnet": "10.50.0.0/21", "interface": "s0", "size": 51 + 1791, "used": 1, "free": 1841},
        {"subnet": "10.61.0.0/24", "interface": None, "size": 241, "used": 0, "free": 241}]
    m = metrics(srv)
    assert m['bootserverd_dhcp_pool_addresses{subnet="10.50.0.0/21"}'] == 1842
    assert m['bootserverd_dhcp_pool_used{subnet="10.50.0.0/21"}'] == 1
    assert m['bootserverd_dhcp_pool_used{subnet="10.61.0.0/24"}'] == 0
    assert m["bootserverd_dhcp_rogue_servers"] == 0
    assert m['bootserverd_dhcp_rogue_replies_total{type="offer"}'] == 0


def test_without_cap_net_raw_dhcp_is_served_and_the_watch_says_why(lan):
    srv, rog, cli, tmp, started = lan
    config = lab.write_config(tmp, lab.SERVER_DHCP)
    log = tmp / "server.log"
    with open(log, "w") as out:     # the DHCP service alone, root without CAP_NET_RAW
        proc = srv.popen(["setpriv", "--bounding-set=-net_raw", *lab.LAB, "serve", str(config)],
                         stdout=out, stderr=subprocess.STDOUT, cwd=lab.ROOT)
    started.append(proc)
    assert wait_for(lambda: "READY" in log.read_text(), 15), log.read_text()
    assert lab.udhcpc(cli, tmp, CLIENT)["ip"] == "10.50.0.100"
    text = log.read_text()
    assert text.count("rogue DHCP server watch off: cannot open a packet socket") == 1, text
    assert "Traceback" not in text
