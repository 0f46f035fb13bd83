"""The local slave slapd (and, in other rounds, the central one) killed with SIGKILL and
restarted while a writer changes devices centrally: afterwards the daemon's model converges
to the centre's content, compared device by device (python-ldap on the centre against each
device's generated pxelinux config, fetched with curl over TFTP)."""

from __future__ import annotations

import random
import re
import subprocess
import threading
import time

import ldap
import yaml

from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
from tests.reliability import figures
from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image

IMAGES = ("kill-2026-01-01-000000-amd64", "kill-2026-02-01-000000-amd64")
DEVICES = f"ou=Devices,{BASE}"
SLOTS = 24


def mac(i: int) -> str:
    return f"52:54:00:00:0b:{i:02x}"


class Writer(threading.Thread):
    """Adds, re-images and deletes devices centrally, one change every ~30 ms, until stopped."""

    def __init__(self, pair: Pair, seed: int):
        super().__init__(daemon=True)
        self.pair, self.rng = pair, random.Random(seed)
        self.done = self.failed = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        conn = None
        for _ in range(100000):                        # bounded; stopped long before
            if self.stopping.wait(0.03):
                break
            i = self.rng.randrange(SLOTS)
            dn = f"cn=k{i},{DEVICES}"
            try:
                conn = conn or self.pair.central.connect()
                if not self._exists(conn, dn):
                    attrs = device_attrs(f"k{i}", mac(i), bootserverdImage=self.rng.choice(IMAGES))
                    conn.add_s(dn, [(k, [v.encode() for v in ([x] if isinstance(x, str) else x)])
                                    for k, x in attrs.items()])
                elif self.rng.random() < 0.7:
                    conn.modify_s(dn, [(ldap.MOD_REPLACE, "bootserverdImage", [self.rng.choice(IMAGES).encode()])])
                else:
                    conn.delete_s(dn)
                self.done += 1
            except ldap.LDAPError:                      # the centre is down this moment
                self.failed += 1
                conn = None

    @staticmethod
    def _exists(conn, dn: str) -> bool:
        try:
            conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["1.1"])
            return True
        except ldap.NO_SUCH_OBJECT:
            return False


def centre_content(pair: Pair) -> dict[str, tuple[str, str] | None]:
    conn = pair.central.connect()
    try:
        found = conn.search_s(DEVICES, ldap.SCOPE_ONELEVEL, "(objectClass=bootserverdDevice)",
                              ["cn", "macAddress", "bootserverdImage"])
    finally:
        conn.unbind_s()
    content: dict[str, tuple[str, str] | None] = {mac(i): None for i in range(SLOTS)}
    for _, a in found:
        content[a["macAddress"][0].decode()] = (a["cn"][0].decode(), a["bootserverdImage"][0].decode())
    return content


def model_content(port: int) -> dict[str, tuple[str, str] | None]:
    """What the daemon would boot each MAC with: (hostname, image) or None (unknown client)."""
    content = {}
    for i in range(SLOTS):
        name = "01-" + mac(i).replace(":", "-")
        text = subprocess.run(["curl", "-sS", "--max-time", "2", f"tftp://127.0.0.1:{port}/pxelinux.cfg/{name}"],
                              capture_output=True, text=True, timeout=10).stdout
        host, image = re.search(r"systemd\.hostname=(\S+)", text), re.search(r"images/([^/\s]+)/vmlinuz", text)
        content[mac(i)] = (host[1], image[1]) if host and image else None
    return content


def test_slapd_kill9_under_changes_model_converges(tmp_path):
    slave_kills, central_kills = figures.scale((2, 1), (10, 5))
    pair = Pair()
    try:
        pair.central.add(DEVICES, {"objectClass": "organizationalUnit", "ou": "Devices"})
        config = write_config(tmp_path, tftp={"enabled": True})
        for name in IMAGES:
            build_image(tmp_path / "images" / f"{name}.img")
        data = yaml.safe_load(config.read_text())
        data["inventory"] = {"source": "ldap", "ldap": {"uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
                                                        "password_file": str(pair.password_file(tmp_path))}}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        port = int(data["tftp"]["listen"].rsplit(":", 1)[1])
        rng = random.Random(8)
        with Daemon(config) as daemon:
            daemon.wait_for("in sync with the replica", timeout=10)
            writer = Writer(pair, seed=8)
            writer.start()
            rounds = ["slave"] * slave_kills + ["central"] * central_kills
            rng.shuffle(rounds)
            for which in rounds:
                time.sleep(rng.uniform(0.3, 0.8))              # changes flow between kills
                server = pair.slave if which == "slave" else pair.central
                server.kill()
                time.sleep(rng.uniform(0.2, 0.6))              # changes pile up (or fail) meanwhile
                server.start()
            time.sleep(0.5)
            writer.stopping.set()
            writer.join(10)
            stopped = time.monotonic()
            pair.wait_in_sync(timeout=30)                      # the slave has the centre's content
            expected = centre_content(pair)
            deadline = stopped + 30
            while True:
                got = model_content(port)
                mismatches = [m for m in expected if got[m] != expected[m]]
                if not mismatches or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            converge = time.monotonic() - stopped
            assert daemon.proc.poll() is None
            assert "Traceback" not in "\n".join(daemon.lines)
        present = sum(1 for v in expected.values() if v)
        figures.record("slapd_kill", "Local and central slapd killed (SIGKILL) under changes", [
            ("slave slapd kills / central slapd kills", f"{slave_kills} / {central_kills}"),
            ("central changes made (failed while the centre was down)", f"{writer.done} ({writer.failed})"),
            ("devices compared (present at the end)", f"{SLOTS} ({present})"),
            ("time from the last change to a matching model", f"{converge:.1f} s"),
            ("mismatches, centre vs the daemon's boot configs (target 0)", len(mismatches)),
        ], note="A writer adds, re-images and deletes devices centrally every ~30 ms; the slave's syncrepl "
                "retry is 1 s, the daemon's back-off starts at 0.5 s.")
        assert writer.done > 20
        assert mismatches == [], f"{len(mismatches)} differ, e.g. {mismatches[0]}: centre {expected[mismatches[0]]}, " \
                                 f"daemon {got[mismatches[0]]}"
    finally:
        pair.cleanup()
