"""`bootserverd selftest` in the lab's server namespace: every check passes against bootserverd
alone; a second DHCP server on the LAN (dnsmasq, as a pupil's home router would) fails it."""

from __future__ import annotations

import subprocess
import time

from tests.e2e.harness import BootLab


def test_selftest_passes_then_flags_a_second_dhcp_server(tmp_path, tiny):
    with BootLab(tmp_path, tiny.path, tiny.name) as lab:
        done = lab.cli("selftest")
        assert done.returncode == 0, done.stdout + done.stderr
        for check in ("http", "dhcp (e2esrv)", "tftp", "nbd"):
            assert any(line.startswith(check) and " pass " in line for line in done.stdout.splitlines()), done.stdout
        assert "first block squashfs" in done.stdout
        # the rogue server sits on the client side of the bridge
        lab.client.ip("addr", "add", "192.168.77.1/24", "dev", "br0")
        rogue = lab.client.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
                                  "--interface=br0", "--bind-interfaces", "--no-ping",
                                  f"--dhcp-leasefile={tmp_path}/rogue.leases", f"--pid-file={tmp_path}/rogue.pid",
                                  "--dhcp-range=192.168.77.50,192.168.77.60,1h"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            assert rogue.poll() is None, "dnsmasq did not start"
            done = lab.cli("selftest")
        finally:
            rogue.terminate()
            rogue.wait(10)
        assert done.returncode == 1, done.stdout
        assert "ANOTHER DHCP SERVER answers on e2esrv: 192.168.77.1" in done.stdout, done.stdout
