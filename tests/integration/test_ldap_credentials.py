"""The directory passwords stay secret: the daemon at debug level (consumer, replication-lag
checks against the centre, /status, /metrics) and `ldap-slave configure` (dry run and real)
never print the bind password; a world-readable password file is warned about; every file
holding a password (the replica's cn=config, written by slapd) is mode 0600."""
import os
import stat
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.support.slapd import (ADMIN_DN, ADMIN_PW, BASE, DAEMON_DN, DAEMON_PW, REPO, SCHEMA_DIR, Pair, Slapd,
                           device_attrs, standard_schemas)
from tests.support.config import write_config
from tests.support.daemon import Daemon


def files_containing(root: Path, secret: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_daemon_at_debug_never_logs_the_bind_password(tmp_path):
    pair = Pair()
    try:
        config = write_config(tmp_path, http={"enabled": True}, server={"address": "127.0.0.1",
                                                                        "state_dir": "../state", "log_level": "debug"})
        data = yaml.safe_load(config.read_text())
        secret = pair.password_file(tmp_path)
        os.chmod(secret, 0o644)
        data["inventory"] = {"source": "ldap", "ldap": {"uri": pair.slave.uri, "base": BASE, "bind_dn": DAEMON_DN,
                                                        "password_file": str(secret), "central_uri": pair.central.uri,
                                                        "lag_check_interval": 0.2}}
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        url = f"http://{data['http']['listen']}"
        with Daemon(config) as daemon:
            line = daemon.wait_for("readable by every user", timeout=10)
            assert "mode 0644" in line
            daemon.wait_for("in sync with the replica", timeout=10)
            pair.central.add(f"cn=c1,{BASE}", device_attrs("c1", "52:54:00:00:0c:01"))
            daemon.wait_for("52:54:00:00:0c:01", timeout=5)
            pair.central.stop()                          # errors are logged too: none may carry it
            daemon.wait_for("cannot compare the replica with the centre", timeout=5)
            pair.slave.stop()
            daemon.wait_for("unavailable", timeout=5)
            answers = [urllib.request.urlopen(f"{url}/{path}", timeout=5).read().decode() for path in ("status", "metrics")]
        while (line := daemon._queue.get(timeout=10)) is not None:     # the rest, up to the exit
            daemon.lines.append(line)
        output = "\n".join(daemon.lines)
        assert " debug " in output                        # debug level was on
        assert DAEMON_PW not in output and all(DAEMON_PW not in a for a in answers)
        assert files_containing(tmp_path / "state", DAEMON_PW) == []
    finally:
        pair.cleanup()


def test_ldap_slave_configure_never_prints_the_password_and_slapd_keeps_it_0600(tmp_path):
    central = Slapd("central", standard_schemas()).start()
    local = Slapd("local", [SCHEMA_DIR / f"{n}.ldif" for n in ("core", "cosine", "nis")], bare=True).start()
    try:
        central.add(BASE, {"objectClass": ["dcObject", "organization"], "dc": "school", "o": "x"})
        pw = tmp_path / "central.secret"
        pw.write_text(ADMIN_PW + "\n")
        os.chmod(pw, 0o600)
        args = [sys.executable, "-m", "bootserverd", "ldap-slave", "configure", "--central", central.uri,
                "--base", BASE, "--bind-dn", ADMIN_DN, "--password-file", str(pw), "--local", local.ldapi,
                "--daemon-dn", DAEMON_DN, "--no-starttls"]
        env = {**os.environ, "LDAPDEBUG": "0"}
        dry = subprocess.run([*args, "--dry-run"], capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        assert dry.returncode == 0 and "credentials=********" in dry.stdout
        real = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        assert real.returncode == 0, real.stderr
        status = subprocess.run([sys.executable, "-m", "bootserverd", "ldap-slave", "status", "--local", local.ldapi],
                                capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
        for run in (dry, real, status):
            assert ADMIN_PW not in run.stdout + run.stderr
        holders = files_containing(local.workdir / "slapd.d", ADMIN_PW)
        assert holders, "the syncrepl credentials should be in the replica's cn=config"
        for path in holders:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert ADMIN_PW not in local.log()
    finally:
        central.cleanup()
        local.cleanup()
