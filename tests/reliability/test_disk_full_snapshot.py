"""Disk full under the directory snapshot: state_dir is a tiny tmpfs made here and filled while
the daemon follows the real slapd pair. One clear error line (not one per retry), the daemon
keeps serving the changes from memory, the snapshot on disk stays the previous complete one
(never truncated, no temporary left holding space), and once there is room the next save
succeeds with everything, without a restart."""

from __future__ import annotations

import json
import subprocess
import time

import yaml

from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
from tests.reliability import figures
from tests.support.config import write_config
from tests.support.daemon import Daemon

DEVICES = f"ou=Devices,{BASE}"
SNAPSHOT = "ldap-snapshot.json"


def fill(directory) -> int:
    """Write until ENOSPC (bounded: 400 MB at most); returns the bytes written."""
    written = 0
    with open(directory / "filler", "wb", buffering=0) as f:
        for _ in range(100000):
            try:
                written += f.write(b"\0" * 4096)
            except OSError:
                break
    return written


def tftp_get(port: int, mac: str) -> str:
    name = "01-" + mac.replace(":", "-")
    return subprocess.run(["curl", "-sS", "--max-time", "2", f"tftp://127.0.0.1:{port}/pxelinux.cfg/{name}"],
                          capture_output=True, text=True, timeout=10).stdout


def snapshot_hosts(state) -> list[str]:
    data = json.loads((state / SNAPSHOT).read_text())          # raises if truncated
    return sorted(attrs["cn"][0] for _, attrs in data["entries"].values())


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError):
            pass
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.05)


def test_snapshot_disk_full(tmp_path):
    changes_while_full = figures.scale(5, 50)
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "bsd-snap-tmpfs", str(state)], check=True)
    pair = Pair()
    try:
        pair.central.add(DEVICES, {"objectClass": "organizationalUnit", "ou": "Devices"})
        for i in range(5):
            pair.central.add(f"cn=f{i},{DEVICES}", device_attrs(f"f{i}", f"52:54:00:00:0f:{i:02x}"))
        config = write_config(tmp_path, tftp={"enabled": True})
        data = yaml.safe_load(config.read_text())
        data["inventory"] = {"source": "ldap", "ldap": {"uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
                                                        "password_file": str(pair.password_file(tmp_path))}}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        port = int(data["tftp"]["listen"].rsplit(":", 1)[1])
        with Daemon(config) as daemon:
            daemon.wait_for("in sync with the replica", timeout=10)
            before = wait(lambda: snapshot_hosts(state) == [f"f{i}" for i in range(5)] and snapshot_hosts(state),
                          5, "the first snapshot")
            fill(state)
            for i in range(5, 5 + changes_while_full):
                pair.central.add(f"cn=f{i},{DEVICES}", device_attrs(f"f{i}", f"52:54:00:00:0f:{i:02x}"))
            line = daemon.wait_for("cannot save the snapshot", timeout=5)
            assert "No space left on device" in line and "previous one stays" in line
            last = 4 + changes_while_full
            wait(lambda: f"(f{last})" in tftp_get(port, f"52:54:00:00:0f:{last:02x}"), 2,
                 "the last change served from memory")
            time.sleep(2.5)                                   # two more save attempts fail meanwhile
            assert snapshot_hosts(state) == before            # the previous snapshot, complete
            leftovers = [p.name for p in state.iterdir() if p.name.endswith(".tmp")]
            assert leftovers == []
            freed = time.monotonic()
            (state / "filler").unlink()
            daemon.wait_for("saved again", timeout=5)
            recovered = time.monotonic() - freed
            assert snapshot_hosts(state) == sorted(f"f{i}" for i in range(5 + changes_while_full))
            text = "\n".join(daemon.lines)
            errors = text.count("cannot save the snapshot")
            assert errors == 1 and "Traceback" not in text and daemon.proc.poll() is None
            assert f"(f{last})" in tftp_get(port, f"52:54:00:00:0f:{last:02x}")
        figures.record("disk_full_snapshot", "Disk full under the directory snapshot", [
            ("state_dir", "tmpfs of 256 KiB, filled to ENOSPC"),
            ("changes made while full (all served from memory)", changes_while_full),
            ("error lines logged while full (target 1)", errors),
            ("snapshot on disk while full", "the previous one, complete; no temporary left"),
            ("space freed → complete new snapshot", f"{recovered:.1f} s, no restart"),
        ])
    finally:
        pair.cleanup()
        subprocess.run(["umount", str(state)], check=False)
