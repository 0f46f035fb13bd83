"""Two boot servers, and one of them dies (#16 part 3, the real guest).

Server A (10.47.0.2) and server B (10.47.0.3) on one bridge with the client's tap, each running
bootserverd from the same config file (pair.servers, dhcp.split 50, server.address the service
address 10.47.0.1) and keepalived from etc/keepalived.conf.example carrying the service address
and tracking /healthz. The real Debian image boots from whichever holds the address (A: it
starts first), its root on NBD through the service address, bootserverd-client's reconnect
helper resident, the image's reader on. Then A dies — its daemon and its keepalived, by their
PIDs: the address moves to B, the guest's kernel holds its I/O, the helper reconnects to the
service address, now B — and the guest must read on without one error. Meanwhile 200 scripted
DHCP clients (tests/support/dhcp_pair.py, on the client's bridge) get leases from both servers,
A dying when 80 are bound, then rebind: none gets an address another holds, all keep theirs
from B. A second PC then boots from B alone.

Slow (two TCG boots of the Debian image, ~5 min): `make e2e`. Holds /tmp/bootserverd-bench.lock.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e.debian_image import FAILURES, MARKER, READER, debian_image
from tests.e2e.harness import DEVICE_MAC, HOSTNAME, KERNEL_ARGS, REPO, BootLab, NsDaemon, Qemu, machine_lock
from tests.support.config import write_config
from tests.support.dhcp_pair import across_a_kill
from tests.support.keepalived import holds, keepalived_argv, keepalived_conf, seconds_until as wait
from tests.support.netns import Netns, veth

pytestmark = pytest.mark.slow

A_IP, B_IP, VIP = "10.47.0.2", "10.47.0.3", "10.47.0.1"
IFACE = "srv0"
SECOND_MAC = "52:54:00:e2:e2:02"
DHCP_CLIENTS = 200
ERRORS = (f"{READER} error", "I/O error", "Input/output error", "SQUASHFS error", "Kernel panic")
OK = re.compile(rf"{READER} ok (\d+) (\d+) longest_read_ms=(\d+)")


class PairLab(BootLab):
    """BootLab with two servers and keepalived instead of one server."""

    def _network(self) -> None:
        self.a, self.b, self.client = Netns("e2ea"), Netns("e2eb"), Netns("e2ec")
        self.server = self.a                       # BootLab's helpers (cli) look here
        self.procs: dict[str, subprocess.Popen] = {}
        c = self.client
        c.ip("link", "add", "br0", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        for ns, address, port in ((self.a, A_IP, "upa"), (self.b, B_IP, "upb")):
            veth(ns, IFACE, c, port)
            ns.ip("addr", "add", f"{address}/22", "dev", IFACE)   # the DHCP subnet: a /22
            c.ip("link", "set", port, "master", "br0")
        for tap in ("tap0", "tap1"):
            c.ip("tuntap", "add", "dev", tap, "mode", "tap")
            c.ip("link", "set", tap, "master", "br0")
            c.ip("link", "set", tap, "up")
        c.ip("link", "set", "br0", "up")

    def _serve(self) -> None:
        from bootserverd.tools.populate import populate
        images = self.tmp / "images"
        images.mkdir(parents=True, exist_ok=True)
        published = images / f"{self.image_name}.img"
        try:
            os.link(self._image_path, published)
        except OSError:
            shutil.copy2(self._image_path, published)
        old = time.time() - 60
        os.utime(published, (old, old))
        populate(self.tmp / "tftp")
        shared = write_config(
            self.tmp, {"devices": self.devices},
            server={"address": VIP, "state_dir": "../state"},
            tftp={"enabled": True, "listen": "0.0.0.0:69", "root": "../tftp"},
            nbd={"enabled": True, "listen": "0.0.0.0:10809"},
            http={"enabled": True, "listen": "0.0.0.0:8080"},
            dhcp={"enabled": True, "interfaces": [IFACE], "split": 50,
                  "rogue_probe_interval": 0,
                  # 512 addresses, 256 a server: after A's death B alone leases to the rest of
                  # the 200 scripted clients and the second PC
                  "subnets": [{"network": "10.47.0.0/22", "pool": "10.47.1.0-10.47.2.255", "lease_time": 600}]},
            pair={"servers": [A_IP, B_IP]},
            boot=self.boot_section)
        self.daemons: dict[str, NsDaemon] = {}
        for name, ns, priority in (("a", self.a, 150), ("b", self.b, 100)):
            state = self.tmp / f"state-{name}"
            state.mkdir()
            own = shared.parent / f"{name}.yaml"            # the same file but for the state dir
            own.write_text(shared.read_text().replace("../state", str(state)))
            self.daemons[name] = NsDaemon(ns, own)
            self.daemons[name].wait_for("bootserverd started", timeout=30)
            self.daemons[name].wait_for(self.image_name, timeout=30)
            conf = self.tmp / f"keepalived-{name}.conf"
            conf.write_text(keepalived_conf(IFACE, VIP, priority))
            self.procs[f"keepalived-{name}"] = ns.popen(
                keepalived_argv(conf, self.tmp, name),
                stdout=open(self.tmp / f"keepalived-{name}.log", "w"), stderr=subprocess.STDOUT)
            if name == "a":                                  # A takes the address first
                assert wait(lambda: holds_vip(self.a), 20) is not None, self.logs()
        self.daemon = self.daemons["a"]

    def qemu_argv(self, **kw) -> list[str]:
        tap = f"tap{len(self.guests)}"                       # one tap per guest
        return [arg.replace("ifname=tap0", f"ifname={tap}") for arg in super().qemu_argv(**kw)]

    def kill_a(self) -> None:
        """Server A dies: its daemon and its keepalived, by their PIDs."""
        self.daemons["a"].proc.kill()
        self.procs["keepalived-a"].kill()
        self.daemons["a"].proc.wait(10)
        self.procs["keepalived-a"].wait(10)

    def logs(self) -> str:
        parts = [f"--- daemon {n}:\n" + "\n".join(d.log().splitlines()[-40:]) for n, d in getattr(self, "daemons", {}).items()]
        parts += [f"--- {p.name}:\n{p.read_text()[-2000:]}" for p in sorted(self.tmp.glob("keepalived-*.log"))]
        return "\n".join(parts)

    def close(self) -> None:
        for proc in getattr(self, "procs", {}).values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        for daemon in getattr(self, "daemons", {}).values():
            if daemon.proc.poll() is None:
                daemon.stop()
        self.daemon = None
        for guest in self.guests:
            guest.stop()
        self.guests = []
        for ns in (getattr(self, "b", None),):
            if ns is not None:
                ns.delete()
        super().close()


def holds_vip(ns: Netns) -> bool:
    return holds(ns, IFACE, VIP)


def reader_rounds(guest: Qemu, since: float) -> list[tuple[float, int, int]]:
    return [(at, int(m[1]), int(m[2])) for at, line in list(guest.stamped)
            if at > since and (m := OK.search(line))]


def errors(guest: Qemu) -> list[str]:
    return [line for _, line in list(guest.stamped) if any(e in line for e in ERRORS)]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    image = debian_image()
    tmp = tmp_path_factory.mktemp("failover")
    devices = [{"mac": DEVICE_MAC, "hostname": HOSTNAME, "type": "thinclient", "image": image.name},
               {"mac": SECOND_MAC, "hostname": "e2e-pc2", "type": "thinclient", "image": image.name}]
    with machine_lock():
        with PairLab(tmp, image.path, image.name, devices=devices,
                     boot={"kernel_args": f"{KERNEL_ARGS} bootserverd.e2e_reader=1"}) as pair:
            yield pair


def test_the_client_reads_on_from_b_when_a_dies_and_a_second_pc_boots_from_b(lab):
    guest = Qemu(lab.qemu_argv(firmware="bios", memory=1024))
    lab.guests.append(guest)
    found, _ = guest.wait_for((MARKER, *FAILURES), timeout=400)
    assert found == MARKER, "\n".join(line for _, line in guest.stamped[-60:]) + lab.logs()
    assert wait(lambda: len(reader_rounds(guest, 0.0)) >= 3, 180) is not None, lab.logs()
    assert re.search(r"NBD 10\.47\.\d+\.\d+:\d+ connected to export", lab.daemons["a"].log()), lab.logs()

    out = lab.tmp / "dhcp-clients.json"
    driver = lab.client.popen([sys.executable, "-m", "tests.support.dhcp_pair", "br0", str(DHCP_CLIENTS), str(out)],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    killed = []
    lines, _ = across_a_kill(driver, lambda: (killed.append(time.monotonic()), lab.kill_a()))
    assert killed and lines[-2:] == ["bound-all", "done"], lines
    killed = killed[0]
    assert wait(lambda: holds_vip(lab.b), 20) is not None, lab.logs()
    moved = time.monotonic() - killed     # an upper bound: checked once the clients were done
    record = json.loads(out.read_text())
    bound, rebound = record["bound"], record["rebound"]
    guest_ip = re.search(rf"ACK (10\.47\.\d+\.\d+) to {DEVICE_MAC}", lab.daemons["a"].log() + lab.daemons["b"].log())[1]
    addresses = [b["ip"] for b in bound.values()]
    assert len(bound) == DHCP_CLIENTS and len(set(addresses)) == DHCP_CLIENTS and guest_ip not in addresses
    assert record["naks"] == [] and all(rebound[mac] == {"ip": bound[mac]["ip"], "server": B_IP} for mac in bound)
    served_by_a = sum(1 for b in bound.values() if b["server"] == A_IP)
    assert wait(lambda: len(reader_rounds(guest, killed)) >= 10 or errors(guest), 180) is not None
    assert not errors(guest), "\n".join(errors(guest)) + "\n" + "\n".join(l for _, l in guest.stamped[-60:])
    after = reader_rounds(guest, killed)
    assert len(after) >= 10, "\n".join(line for _, line in guest.stamped[-60:]) + lab.logs()
    assert re.search(r"NBD 10\.47\.\d+\.\d+:\d+ connected to export", lab.daemons["b"].log()), lab.logs()
    window = reader_rounds(guest, killed - 5)
    gap = max(b[0] - a[0] for a, b in itertools.pairwise(window))
    print(f"\nfailover: service address on B within {moved:.1f} s of A's death; longest gap between the "
          f"guest's reader lines {gap:.1f} s; {len(after)} rounds since, 0 errors; {DHCP_CLIENTS} DHCP clients "
          f"({served_by_a} from A before it died) bound once each, all rebound to B with their addresses")

    second = lab.boot(timeout=400, markers=(MARKER,), failures=FAILURES, mac=SECOND_MAC, memory=1024)
    assert second.marker, lab.explain(second)
    assert SECOND_MAC.replace(":", "").lower() in lab.daemons["b"].log().replace(":", "").lower()
