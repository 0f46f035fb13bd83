"""The served interface going down and up, and its address removed and re-added, under DHCP
traffic: the daemon (`python -m bootserverd run`) follows netlink and resumes without a
restart. Two namespaces joined by a veth pair; in the client namespace a pinger broadcasts a
DISCOVER every 20 ms (a fresh xid each) and records when each was answered; busybox udhcpc
takes a whole lease after each restoration.

    python test_dhcp_link.py pinger IFACE MAC SECONDS   (in the client namespace; a line on
                                                         stdin, or SECONDS, ends it)
"""

from __future__ import annotations

import json
import random
import select
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SELF = str(Path(__file__).resolve())
PERIOD = 0.02


def pinger(ifname: str, mac: str, seconds: float) -> None:
    from dhcp import options as O
    from dhcp.codec import BROADCAST_FLAG, Message, ProtocolError, decode, encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.bind(("0.0.0.0", 68))
    chaddr = bytes.fromhex(mac.replace(":", ""))
    base = random.getrandbits(31)
    sent: list[list] = []          # [send time, answer time or None]
    print("READY", flush=True)
    end = time.monotonic() + seconds
    next_send = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_send:
            msg = Message(xid=base + len(sent), chaddr=chaddr, flags=BROADCAST_FLAG,
                          options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),))
            try:
                sock.sendto(encode(msg), ("255.255.255.255", 67))
            except OSError:        # no carrier / no route: counts as sent, unanswered
                pass
            sent.append([now, None])
            next_send = now + PERIOD
        ready, _, _ = select.select([sock, sys.stdin], [], [],
                                    max(0.0, next_send - time.monotonic()))
        if sys.stdin in ready:     # the test is done with its faults
            break
        if sock in ready:
            try:
                reply = decode(sock.recv(4096))
            except (ProtocolError, OSError):
                continue
            n = reply.xid - base
            if reply.msg_type == O.OFFER and 0 <= n < len(sent) and sent[n][1] is None:
                sent[n][1] = time.monotonic()
    time.sleep(0.3)  # late answers
    while select.select([sock], [], [], 0)[0]:
        try:
            reply = decode(sock.recv(4096))
        except (ProtocolError, OSError):
            continue
        n = reply.xid - base
        if 0 <= n < len(sent) and sent[n][1] is None:
            sent[n][1] = time.monotonic()
    print(json.dumps(sent), flush=True)


# ---------------------------------------------------------------------------------------
from tests.reliability import figures  # noqa: E402
from tests.support import dhcp_lab as lab  # noqa: E402
from tests.support.netns import namespaces, veth  # noqa: E402

DHCP_YAML = """  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.50.0.0/21
      pool: 10.50.0.100-10.50.0.199
      router: 10.50.0.1
      lease_time: 600
"""
PINGER_MAC = "52:54:00:cc:00:01"
FAULTS = {
    "link down/up": (("link", "set", "s0", "down"), ("link", "set", "s0", "up")),
    "address removed/re-added": (("addr", "del", "10.50.0.1/21", "dev", "s0"),
                                 ("addr", "add", "10.50.0.1/21", "dev", "s0")),
}


def analyse(sent: list, events: list) -> dict:
    """Per fault: resume time (restore → first answer to a DISCOVER sent after it), and the
    DISCOVERs sent outside any outage that went unanswered (lost answers)."""
    out = {name: {"resume": [], "outage_unanswered": 0} for name in FAULTS}
    lost = 0
    windows = []
    for name, broken, restored in events:
        answers = [a for s, a in sent if s >= restored and a is not None]
        first = min(answers) if answers else None
        out[name]["resume"].append(None if first is None else first - restored)
        windows.append((broken, first if first is not None else float("inf")))
        out[name]["outage_unanswered"] += sum(1 for s, a in sent if broken <= s < restored and a is None)
    for s, a in sent:
        # a DISCOVER answered "late" by more than a second, or never, outside the outages
        in_outage = any(b - 0.1 <= s <= r for b, r in windows)
        if not in_outage and (a is None or a - s > 1.0):
            lost += 1
    return {"faults": out, "lost": lost, "sent": len(sent),
            "answered": sum(1 for _, a in sent if a is not None)}


def test_interface_down_up_and_address_readded(tmp_path):
    cycles = figures.scale(1, 5)
    hold = figures.scale(0.3, 1.0)             # seconds each outage lasts
    with namespaces("rlsrv", "rlcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/21", "dev", "s0")
        config = lab.write_config(tmp_path, DHCP_YAML)
        daemon = lab.Daemon(srv, config, tmp_path / "daemon.log")
        daemon.start()
        pid = daemon.proc.pid
        seconds = 1.0 + cycles * len(FAULTS) * (hold + 5.0) + 1.0   # an upper bound
        ping = cli.popen([sys.executable, SELF, "pinger", "c0", PINGER_MAC, str(seconds)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        events, leases = [], []
        try:
            assert ping.stdout.readline().strip() == "READY"
            time.sleep(0.5)
            for _ in range(cycles):
                for name, (breaking, restoring) in FAULTS.items():
                    srv.ip(*breaking)
                    broken = time.monotonic()
                    time.sleep(hold)
                    srv.ip(*restoring)
                    restored = time.monotonic()
                    events.append((name, broken, restored))
                    time.sleep(0.5)
                    # a whole lease (DISCOVER … ACK) from a real client after each restoration
                    leases.append(lab.udhcpc(cli, tmp_path, lab.RESERVED_MAC).get("ip"))
            time.sleep(0.5)
            out, _ = ping.communicate("stop\n", timeout=seconds + 30)
        finally:
            if ping.poll() is None:
                ping.kill()
                ping.wait()
            same_process = daemon.proc.poll() is None and daemon.proc.pid == pid
            daemon.kill9()
    sent = json.loads(out.strip().splitlines()[-1])
    result = analyse(sent, events)
    log = (tmp_path / "daemon.log").read_text()
    rows = [("DISCOVERs (one per 20 ms)", f"{result['sent']} sent, {result['answered']} answered"),
            ("cycles", f"{cycles} × each fault, outage {hold} s")]
    for name, f in result["faults"].items():
        resumes = [r for r in f["resume"] if r is not None]
        rows.append((f"{name}: restore → first OFFER",
                     f"median {statistics.median(resumes) * 1000:.0f} ms, max "
                     f"{max(resumes) * 1000:.0f} ms" if resumes else "never"))
        rows.append((f"{name}: DISCOVERs unanswered during the outage", f["outage_unanswered"]))
    rows += [("DISCOVERs lost outside the outages", result["lost"]),
             ("udhcpc after each restoration", f"{leases.count('10.50.0.57')}/{len(leases)} got "
                                                f"10.50.0.57"),
             ("daemon restarted", "no" if same_process else "YES"),
             ("tracebacks in the log", log.count("Traceback"))]
    figures.record("dhcp_link", "Served interface down/up and address removed/re-added "
                   "(namespaces)", rows,
                   "Restore → first OFFER includes the veth carrier coming back, netlink's "
                   "notification, the 50 ms coalescing of bursts and the 20 ms pinger period.")
    assert same_process
    assert "Traceback" not in log
    assert leases == ["10.50.0.57"] * len(leases) and len(leases) == cycles * len(FAULTS)
    for name, f in result["faults"].items():
        assert all(r is not None and r < 2.0 for r in f["resume"]), (name, f)
        assert f["outage_unanswered"] > 0, (name, "the fault did not interrupt service")
    assert result["lost"] == 0, result
    assert "interfaces without an IPv4 address or down: s0" in log
    assert log.count("serving on s0 10.50.0.1/21") >= 1 + 2 * cycles


if __name__ == "__main__":
    if sys.argv[1] == "pinger":
        pinger(sys.argv[2], sys.argv[3], float(sys.argv[4]))
