"""Restart time with 50,000 leases: from exec of `python -m bootserverd run` to its first
answered DHCP packet, median of 3, in two namespaces joined by a veth pair. A probe in the
client namespace acts as a relay (giaddr, port 67) and sends a DISCOVER every 5 ms from
before the exec, so the figure is what a client sees, not what the daemon logs.

    python test_dhcp_restart.py probe GIADDR SERVER SECONDS   (runs inside the client ns)
"""

from __future__ import annotations

import json
import os
import random
import re
import select
import socket
import statistics
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
SELF = str(Path(__file__).resolve())
PROBE_MAC = "02:44:00:00:00:07"     # a client that holds one of the 50,000 leases


def probe(giaddr: str, server: str, seconds: float) -> None:
    """Print READY, then send relayed DISCOVERs until an OFFER; print its monotonic time."""
    from dhcp import options as O
    from dhcp.codec import Message, ProtocolError, decode, encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((giaddr, 67))
    xid = random.getrandbits(32)
    packet = encode(Message(op=1, xid=xid, chaddr=bytes.fromhex(PROBE_MAC.replace(":", "")),
                            giaddr=IPv4Address(giaddr), hops=1,
                            options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),)))
    print("READY", flush=True)
    sys.stdin.readline()                       # the test execs the daemon, then says go
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        sock.sendto(packet, (server, 67))
        sent += 1
        ready, _, _ = select.select([sock], [], [], 0.005)
        if not ready:
            continue
        try:
            reply = decode(sock.recv(4096))
        except (ProtocolError, OSError):
            continue
        if reply.xid == xid and reply.msg_type == O.OFFER:
            print(json.dumps({"answered_at": time.monotonic(), "yiaddr": str(reply.yiaddr),
                              "sent": sent}), flush=True)
            return
    print(json.dumps({"answered_at": None, "sent": sent}), flush=True)


def fill_journal(path: Path, count: int, now: float) -> None:
    """`count` bound leases in 10.50.1.0 onwards; the probe's MAC holds the 8th."""
    from dhcp.journal import format_row
    from dhcp.leases import BOUND, Lease
    base = int(IPv4Address("10.50.1.0"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for i in range(count):
            mac = f"02:44:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            key = b"\x01" + bytes.fromhex(mac.replace(":", ""))
            f.write(format_row(Lease(IPv4Address(base + i), key, mac, f"pc-{i}", now + 86400, BOUND)))


# ---------------------------------------------------------------------------------------

from tests.reliability import figures  # noqa: E402
from tests.support import dhcp_lab as lab  # noqa: E402
from tests.support.netns import namespaces, veth  # noqa: E402

DHCP_YAML = """  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.50.0.0/16
      pool: 10.50.1.0-10.50.255.254
      router: 10.50.0.1
      lease_time: 86400
"""


def one_restart(srv, cli, config: Path, log: Path) -> tuple[float, dict]:
    """Seconds from Popen of the daemon to the probe's first OFFER."""
    probe_proc = cli.popen([sys.executable, SELF, "probe", "10.50.0.2", "10.50.0.1", "20"],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    daemon = None
    try:
        assert probe_proc.stdout.readline().strip() == "READY"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(log, "a") as logf:
            started = time.monotonic()
            daemon = srv.popen([sys.executable, "-m", "bootserverd", "run", "--config", str(config)],
                               cwd=ROOT, env=env, stdout=logf, stderr=subprocess.STDOUT)
        probe_proc.stdin.write("go\n")
        probe_proc.stdin.flush()
        out, _ = probe_proc.communicate(timeout=30)
        result = json.loads(out.strip().splitlines()[-1])
        assert result["answered_at"] is not None, log.read_text()[-3000:]
        return result["answered_at"] - started, result
    finally:
        if probe_proc.poll() is None:
            probe_proc.kill()
            probe_proc.wait()
        if daemon is not None and daemon.poll() is None:
            daemon.kill()          # kill -9: what a crash does; the next run starts from it
            daemon.wait(10)


def all_services(config: Path) -> Path:
    """The same config with TFTP, NBD and HTTP on too (their default ports: a fresh netns)."""
    text = config.read_text()
    for section in ("tftp", "nbd", "http"):
        text = text.replace(f"{section}: {{enabled: false", f"{section}: {{enabled: true")
    assert text.count("enabled: true") == 4, text
    path = config.with_name("all-services.yaml")
    path.write_text(text)
    return path


def test_restart_with_50000_leases(tmp_path):
    count = 50_000
    runs = 3
    with namespaces("rrsrv", "rrcli") as (srv, cli):
        veth(srv, "s0", cli, "c0")
        srv.ip("addr", "add", "10.50.0.1/16", "dev", "s0")
        cli.ip("addr", "add", "10.50.0.2/16", "dev", "c0")
        dhcp_only = lab.write_config(tmp_path, DHCP_YAML)
        journal = tmp_path / "state" / "leases"
        fill_journal(journal, count, time.time())
        log = tmp_path / "daemon.log"
        times: dict[str, list[float]] = {"DHCP only": [], "all four services": []}
        offers = []
        for name, config in (("DHCP only", dhcp_only), ("all four services", all_services(dhcp_only))):
            for _ in range(runs):
                seconds, result = one_restart(srv, cli, config, log)
                times[name].append(seconds)
                offers.append(result["yiaddr"])
    text = log.read_text()
    loaded = [line for line in text.splitlines() if "leases loaded" in line]
    medians = {name: statistics.median(t) for name, t in times.items()}
    rows = [("leases in the journal", f"{count:,}"),
            ("restarts (kill -9 in between)", f"{runs} per config")]
    rows += [(f"exec → first answered DISCOVER, {name}",
              ", ".join(f"{t:.2f} s" for t in sorted(t_)) + f" (median {medians[name]:.2f} s)")
             for name, t_ in times.items()]
    logged = re.search(r"(\d+ leases loaded \(\d+ active\)).* in ([\d.]+ s)", loaded[-1]) \
        if loaded else None
    rows.append(("journal load, as logged (last run)",
                 f"{logged[1]} in {logged[2]}" if logged else "?"))
    figures.record("dhcp_restart", "DHCP restart with 50,000 leases (exec to first OFFER)", rows,
                   "The probe is a relay-style client in a second namespace sending a DISCOVER "
                   "every 5 ms from before the exec; the time includes Python's start, imports, "
                   "config, inventory, journal load and opening :67. Target < 1 s.")
    assert "Traceback" not in text
    assert all(ip == "10.50.1.7" for ip in offers), offers   # the probe's lease, remembered
    assert len(loaded) == 2 * runs and all(f"{count} leases loaded" in line for line in loaded)
    # The full run is held to the issue's bound; the short one (a loaded 2-core box running
    # other engineers' tests) gets headroom but still catches a regression to seconds.
    assert max(medians.values()) < figures.scale(2.0, 1.0), times


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(sys.argv[2], sys.argv[3], float(sys.argv[4]))
