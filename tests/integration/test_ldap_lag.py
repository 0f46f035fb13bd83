"""Replication lag in /status, /metrics and the log, against the real slapd pair: the centre
stopped (the lag grows from the last check that found the replica current), replication
broken while the centre answers (the lag counts from the change the replica lacks), and
both times back to 0 with one "caught up" line."""
import json
import time
import urllib.parse
import urllib.request

import ldap
import pytest
import yaml

from tests.support.slapd import BASE, DAEMON_DN, Pair, device_attrs
from tests.support.config import write_config
from tests.support.daemon import Daemon

DEVICES = f"ou=Devices,{BASE}"


@pytest.fixture()
def pair():
    p = Pair()
    p.central.add(DEVICES, {"objectClass": "organizationalUnit", "ou": "Devices"})
    p.wait_in_sync()
    yield p
    p.cleanup()


def start_daemon(tmp_path, pair) -> tuple[Daemon, str]:
    config = write_config(tmp_path, http={"enabled": True})
    data = yaml.safe_load(config.read_text())
    data["inventory"] = {"source": "ldap", "ldap": {
        "uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
        "password_file": str(pair.password_file(tmp_path)), "central_uri": pair.central.uri,
        "lag_check_interval": 0.2, "lag_warn_seconds": 1.5}}
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return Daemon(config), f"http://{data['http']['listen']}"


def replication(url: str) -> dict:
    with urllib.request.urlopen(url + "/status", timeout=5) as answer:
        return json.load(answer)["directory"]["replication"]


def gauge(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("bootserverd_directory_lag_seconds "):
                return float(line.split()[1])
    raise AssertionError("no bootserverd_directory_lag_seconds in /metrics")


def until(url: str, predicate, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = replication(url)
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"not within {timeout} s: {status}"
        time.sleep(0.1)


def set_provider(pair: Pair, provider: str) -> None:
    """Point the slave's syncrepl at ``provider`` (cn=config over its ldapi socket, as root)."""
    conn = ldap.initialize(pair.slave.ldapi)
    conn.sasl_external_bind_s()
    try:
        dn, attrs = conn.search_s("cn=config", ldap.SCOPE_ONELEVEL, "(olcSyncrepl=*)", ["olcSyncrepl"])[0]
        line = attrs["olcSyncrepl"][0].decode()
        old = next(part for part in line.split() if part.startswith("provider="))
        conn.modify_s(dn, [(ldap.MOD_REPLACE, "olcSyncrepl", [line.replace(old, f"provider={provider}").encode()])])
    finally:
        conn.unbind_s()


def test_lag_visible_while_the_centre_is_down_or_replication_broken_and_back_to_zero(tmp_path, pair):
    daemon, url = start_daemon(tmp_path, pair)
    with daemon:
        daemon.wait_for("in sync with the replica", timeout=10)
        status = until(url, lambda s: s["state"] == "in sync")
        assert status["lag_seconds"] == 0 and status["centre"] == pair.central.uri
        assert status["replica_csn"] == status["central_csn"] != []
        assert gauge(url) == 0
        # 1. the centre stops: nothing can be confirmed, the lag grows from the last good check
        pair.central.stop()
        daemon.wait_for("cannot compare the replica with the centre: centre", timeout=5)
        line = daemon.wait_for("behind the centre (it cannot be compared; threshold 1.5 s)", timeout=5)
        status = until(url, lambda s: s["lag_seconds"] >= 1.5)
        assert status["state"] == "cannot compare" and gauge(url) >= 1.5
        pair.central.start()
        daemon.wait_for("the replica and the centre can be compared again", timeout=10)
        daemon.wait_for("the replica caught up with the centre", timeout=10)
        until(url, lambda s: s["state"] == "in sync" and s["lag_seconds"] == 0)
        assert gauge(url) == 0
        # 2. replication broken while both answer: the lag counts from the change it lacks
        set_provider(pair, "ldap://127.0.0.1:9")
        written = time.time()
        pair.central.add(f"cn=late,{DEVICES}", device_attrs("late", "52:54:00:00:07:01"))
        status = until(url, lambda s: s["state"] == "behind" and s["lag_seconds"] >= 1.5)
        assert status["replica_csn"] != status["central_csn"]
        assert status["lag_seconds"] <= time.time() - written + 1.1      # from the change (CSN µs, clock skew 0)
        daemon.wait_for("behind the centre (it lacks changes; threshold 1.5 s)", timeout=5)
        set_provider(pair, pair.central.uri)
        daemon.wait_for("device 52:54:00:00:07:01 (late) added", timeout=10)
        daemon.wait_for("the replica caught up with the centre", timeout=5)
        assert until(url, lambda s: s["state"] == "in sync")["lag_seconds"] == 0 and gauge(url) == 0
        text = "\n".join(daemon.lines)
        assert text.count("caught up with the centre") == 2 and text.count("behind the centre (") == 2
        assert "Traceback" not in text
