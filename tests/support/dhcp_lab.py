"""The DHCP lab: our DHCP service and real clients in network namespaces (tests/support/netns.py).

Run inside a namespace (as a module, from the repository, as ``LAB`` does):
  python -m tests.support.dhcp_lab serve CONFIG.yaml    # the DHCP service alone, prints READY
  python -m tests.support.dhcp_lab relay-driver ...     # relay-style client recording ACKs
  python -m tests.support.dhcp_lab pxe-client IFACE MAC # a PXE ROM's exchange, prints JSON
Imported, it gives the test side: write_config, Server (that service in a namespace), Daemon
(the shipped daemon in one), udhcpc, lease_ip and the inventory's MACs.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from ipaddress import IPv4Address
from pathlib import Path

from tests.support.netns import Netns

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
LAB = (PY, "-m", "tests.support.dhcp_lab")     # run with cwd=ROOT, inside a namespace

RESERVED_MAC = "52:54:00:aa:00:01"
DHCLIENT_MAC = "52:54:00:aa:00:02"
PXE_MAC = "52:54:00:aa:00:03"


# ---------------------------------------------------------------------------------------
# Harness side (runs inside namespaces)
# ---------------------------------------------------------------------------------------
def serve(config_path: str) -> None:
    from twisted.internet import reactor

    from bootserverd.config import settings as configmod
    from bootserverd.inventory.yaml_source import parse_inventory
    from bootserverd.ops.logsetup import start_logging
    from bootserverd.model.snapshot import Inventory, Model
    from bootserverd.boot.resolver import BootResolver
    from services.dhcp import DHCPService

    config = configmod.load(Path(config_path))
    start_logging(config.server.log_format, config.server.log_level, stream=sys.stderr)
    model = Model(Inventory(parse_inventory(config.inventory.file), {}, config.images.default))
    service = DHCPService(config.dhcp, config.server, model, BootResolver(config, model),
                          config.server.state_dir / "leases", reactor=reactor, pair=config.pair)

    def start():
        service.startService()
        print("READY", flush=True)

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    if os.environ.get("DHCP_PROFILE"):  # benchmark diagnosis: cProfile dump at exit
        import cProfile
        cProfile.runctx("reactor.run()", globals(), locals(), os.environ["DHCP_PROFILE"])
        return
    reactor.run()


def _mac_bytes(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", ""))


def relay_driver(server: str, giaddr: str, count: int, seconds: float, out: str,
                 rate: float = 150.0) -> None:
    """Act as a relay agent on :67 for `count` distinct clients; append every ACK (mac, ip)
    to `out` the moment it arrives (fsynced, so the test sees it even if we are killed)."""
    from dhcp import options as O
    from dhcp.codec import Message, decode, encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((giaddr, 67))
    sock.settimeout(0.05)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    todo = [f"02:42:{i >> 24 & 255:02x}:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
            for i in range(1, count + 1)]
    done: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    gi = IPv4Address(giaddr)
    while todo and time.monotonic() < deadline:
        started = time.monotonic()
        batch, todo = todo[:25], todo[25:]
        xids = {random.getrandbits(32): mac for mac in batch}
        for xid, mac in xids.items():
            m = Message(op=1, xid=xid, chaddr=_mac_bytes(mac), giaddr=gi, hops=1,
                        options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),))
            sock.sendto(encode(m), (server, 67))
        acked: set[str] = set()
        requested: set[int] = set()
        phase_end = time.monotonic() + 0.4
        while time.monotonic() < phase_end and len(acked) < len(batch):
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            reply = decode(data)
            mac = xids.get(reply.xid)
            if mac is None:
                continue
            if reply.msg_type == O.OFFER and reply.xid not in requested:
                requested.add(reply.xid)
                m = Message(op=1, xid=reply.xid, chaddr=_mac_bytes(mac), giaddr=gi, hops=1,
                            options=((O.MESSAGE_TYPE, O.u8(O.REQUEST)),
                                     (O.SERVER_ID, reply.get(O.SERVER_ID)),
                                     (O.REQUESTED_IP, reply.yiaddr.packed)))
                sock.sendto(encode(m), (server, 67))
            elif reply.msg_type == O.ACK and mac not in acked:
                acked.add(mac)
                os.write(fd, f"{mac} {reply.yiaddr}\n".encode())
                os.fsync(fd)
                done[mac] = str(reply.yiaddr)
        todo += [mac for mac in batch if mac not in acked]  # retried (server may be down)
        time.sleep(max(0.0, len(batch) / rate - (time.monotonic() - started)))  # paced
    os.close(fd)
    print(json.dumps({"acked": len(done), "left": len(todo)}), flush=True)


def pxe_client(ifname: str, mac: str) -> None:
    """What a PXE ROM does beside a school DHCP server: DISCOVER, collect the address offer
    and the proxy offer, REQUEST the address, then ask the boot server on :4011."""
    from dhcp import options as O
    from dhcp.codec import BROADCAST_FLAG, Message, decode, encode
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.bind(("0.0.0.0", 68))
    sock.settimeout(0.1)
    pxe = ((O.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"), (O.CLIENT_ARCH, O.u16(0)),
           (O.CLIENT_NDI, b"\x01\x02\x01"), (O.CLIENT_UUID, b"\x00" + bytes(range(16))),
           (O.PARAM_REQUEST, bytes([1, 3, 6, 43, 54, 60, 66, 67, 97])))
    xid = random.getrandbits(32)
    chaddr = _mac_bytes(mac)

    def collect(seconds, want=lambda r: True):
        got, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                r = decode(sock.recv(4096))
            except socket.timeout:
                continue
            if r.xid == xid and r.op == 2 and want(r):
                got.append(r)
        return got

    result = {}
    for attempt in range(3):
        sock.sendto(encode(Message(op=1, xid=xid, chaddr=chaddr, flags=BROADCAST_FLAG,
                                   options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),) + pxe)),
                    ("255.255.255.255", 67))
        offers = collect(1.5, lambda r: r.msg_type == O.OFFER)
        address = [r for r in offers if int(r.yiaddr)]
        proxy = [r for r in offers if not int(r.yiaddr) and r.get(O.VENDOR_CLASS) == b"PXEClient"]
        if address and proxy:
            break
    else:
        print(json.dumps({"error": f"offers: {[(str(r.yiaddr), r.file) for r in offers]}"}))
        return
    a, p = address[0], proxy[0]
    result["address_server"] = str(IPv4Address(a.get(O.SERVER_ID)))
    result["proxy_server"] = str(IPv4Address(p.get(O.SERVER_ID)))
    result["proxy_offer_file"] = p.file.decode()
    sock.sendto(encode(Message(op=1, xid=xid, chaddr=chaddr, flags=BROADCAST_FLAG, options=(
        (O.MESSAGE_TYPE, O.u8(O.REQUEST)), (O.SERVER_ID, a.get(O.SERVER_ID)),
        (O.REQUESTED_IP, a.yiaddr.packed)) + pxe)), ("255.255.255.255", 67))
    acks = collect(1.5, lambda r: r.msg_type == O.ACK)
    if not acks:
        print(json.dumps({"error": "no ACK from the address server", **result}))
        return
    ip = acks[0].yiaddr
    result["ip"] = str(ip)
    # The ROM now has an address: it asks the boot server (proxy) on port 4011, unicast.
    subprocess.run(["ip", "addr", "add", f"{ip}/24", "dev", ifname], check=True)
    boot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    boot.bind((str(ip), 0))
    boot.settimeout(0.2)
    for attempt in range(10):
        boot.sendto(encode(Message(op=1, xid=xid, chaddr=chaddr, ciaddr=ip, options=(
            (O.MESSAGE_TYPE, O.u8(O.REQUEST)),) + pxe)), (result["proxy_server"], 4011))
        try:
            r = decode(boot.recv(4096))
        except socket.timeout:
            continue
        result["boot_ack_type"] = r.msg_type
        result["boot_file"] = r.file.decode()
        result["boot_siaddr"] = str(r.siaddr)
        break
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------
# Test side
# ---------------------------------------------------------------------------------------
INVENTORY = f"""
defaults:
  type: thinclient
devices:
  - mac: "{RESERVED_MAC}"
    hostname: class-12
    type: thinclient
    ip: 10.50.0.57
  - mac: "{DHCLIENT_MAC}"
    hostname: lab-laptop-3
    type: laptop
    ip: 10.50.0.58
  - mac: "{PXE_MAC}"
    hostname: pxe-box
    type: fatclient
"""


def write_config(tmp: Path, dhcp_yaml: str, address: str = "10.50.0.1") -> Path:
    (tmp / "images").mkdir(exist_ok=True)
    (tmp / "tftp").mkdir(exist_ok=True)
    (tmp / "inventory.yaml").write_text(INVENTORY)
    path = tmp / "bootserverd.yaml"
    path.write_text(f"""
server:
  address: {address}
  state_dir: {tmp / 'state'}
  log_level: info
images:
  dir: {tmp / 'images'}
tftp: {{enabled: false, root: {tmp / 'tftp'}}}
nbd: {{enabled: false}}
http: {{enabled: false}}
inventory:
  source: yaml
  file: {tmp / 'inventory.yaml'}
dhcp:
{dhcp_yaml}
""")
    return path


SERVER_DHCP = """  enabled: true
  interfaces: [s0]
  subnets:
    - network: 10.50.0.0/21
      pool: ["10.50.0.100-10.50.0.150", "10.50.1.0-10.50.7.254"]
      router: 10.50.0.1
      dns: [10.50.0.1]
      domain: school.test
      lease_time: 600
    - network: 10.61.0.0/24
      pool: 10.61.0.10-10.61.0.250
      router: 10.61.0.1
      lease_time: 900
"""


class Server:
    """Our DHCP service in a namespace, restartable, killed by its own PID."""

    def __init__(self, ns: Netns, config: Path, log: Path):
        self.ns, self.config, self.log = ns, config, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> float:
        started = time.monotonic()
        logf = open(self.log, "a")
        self.proc = self.ns.popen([*LAB, "serve", str(self.config)], stdout=subprocess.PIPE,
                                  stderr=logf, text=True, cwd=ROOT)
        logf.close()
        line = ""
        while time.monotonic() - started < timeout:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline()
                if not line:
                    break
                with open(self.log, "a") as f:
                    f.write(line)
                if line.strip() == "READY":
                    self._drain_in_background()
                    return time.monotonic() - started
        self.stop()
        raise AssertionError(f"server did not start: {self.log.read_text()[-3000:]}")

    def _drain_in_background(self) -> None:
        proc, log = self.proc, self.log

        def pump():
            with open(log, "a") as f:
                for line in proc.stdout:
                    f.write(line)
                    f.flush()
        threading.Thread(target=pump, daemon=True).start()

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill9()


UDHCPC_SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "ip=$ip hostname=$hostname router=$router dns=$dns domain=$domain \
lease=$lease serverid=$serverid boot_file=$boot_file" >> "$OUT"
exit 0
"""


def udhcpc(cli: Netns, tmp: Path, mac: str, extra=(), tries: int = 4, check: bool = True) -> dict:
    """busybox udhcpc on c0 with ``mac``: the bound lease's fields (ip, hostname, router, ...);
    with check=False no lease is an answer too ({})."""
    cli.ip("link", "set", "c0", "address", mac)
    script = tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    out = tmp / f"udhcpc-{mac.replace(':', '')}-{time.monotonic_ns()}.out"
    r = cli.run(["busybox", "udhcpc", "-i", "c0", "-f", "-q", "-n", "-t", str(tries), "-T", "1",
                 "-s", str(script), *extra], env={**os.environ, "OUT": str(out)}, timeout=20)
    assert r.returncode == 0 or not check, r.stdout + r.stderr
    return dict(kv.split("=", 1) for kv in out.read_text().split() if "=" in kv) if out.exists() else {}


def lease_ip(ns: Netns, tmp: Path, mac: str) -> str | None:
    """One udhcpc try (3 DISCOVERs): the address it got, None if none (under a flood, a full disk)."""
    return udhcpc(ns, tmp, mac, tries=3, check=False).get("ip")


class Daemon:
    """The shipped daemon in a namespace; start() returns seconds until :67 is open."""

    def __init__(self, ns: Netns, config: Path, log: Path):
        self.ns, self.config, self.log = ns, config, log
        self.proc: subprocess.Popen | None = None
        self.lines: list[str] = []

    def start(self, timeout: float = 20.0) -> float:
        started = time.monotonic()
        self.proc = self.ns.popen([sys.executable, "-m", "bootserverd", "run", "--config",
                                   str(self.config)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, errors="replace")
        ready = threading.Event()
        proc, lines = self.proc, []
        self.lines = lines

        def pump():  # a thread per process: readline buffers, select() would miss lines
            with open(self.log, "a") as f:
                for line in proc.stdout:
                    f.write(line)
                    lines.append(line)
                    if "ports 67" in line:
                        ready.set()
            ready.set()
        threading.Thread(target=pump, daemon=True).start()
        ready.wait(timeout)
        if self.proc.poll() is not None or not any("ports 67" in line for line in list(lines)):
            self.kill9()
            raise AssertionError(f"daemon did not start: {self.log.read_text()[-3000:]}")
        return time.monotonic() - started

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "serve":
        serve(sys.argv[2])
    elif command == "relay-driver":
        relay_driver(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]), sys.argv[6],
                     float(sys.argv[7]) if len(sys.argv) > 7 else 150.0)
    elif command == "pxe-client":
        pxe_client(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown command {command}")
