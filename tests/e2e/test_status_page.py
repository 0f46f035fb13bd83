"""The status page after a real morning in the boot lab, as a person's browser shows it: one PC
booted the tiny image through bootserverd (BIOS, iPXE, HTTP, NBD), another was sent an error
menu (its image is not published). Headless chromium loads the page from the daemon."""

from __future__ import annotations

import re
import time

from tests.e2e.harness import DEVICE_MAC, HOSTNAME
from tests.e2e.status_lab import PAGE, STOPPING_HOST, STOPPING_MAC, make_lab, morning
from tests.support.browser import dump_dom


def _row(dom: str, mac: str) -> str:
    match = re.search(rf'<tr data-mac="{mac}"[^>]*>(.*?)</tr>', dom)
    assert match, dom
    return re.sub(r"<[^>]+>", " ", match.group(1))          # the row's text, as read on screen


def test_page_shows_who_booted_and_where_the_other_stopped(tmp_path, tiny):
    with make_lab(tmp_path, tiny) as lab:
        morning(lab)
        devices = dump_dom(f"{PAGE}/ui/devices", netns=lab.server)
        booted = _row(devices, DEVICE_MAC)
        assert HOSTNAME in booted and "booted" in booted and tiny.name in booted, booted
        stopped = _row(devices, STOPPING_MAC)
        assert STOPPING_HOST in stopped and "stopped" in stopped, stopped
        assert "boot loader" in stopped and "e2etiny-unpublished is not published" in stopped, stopped

        overview = dump_dom(f"{PAGE}/", netns=lab.server)
        storm = re.search(r'<svg[^>]*class="gantt".*?</svg>', overview, re.S)
        assert storm, overview
        rows = re.findall(r'<a href="/ui/device/([0-9a-f:]+)" class="row"', storm.group(0))
        assert sorted(rows) == [DEVICE_MAC, STOPPING_MAC], storm.group(0)
        assert storm.group(0).count('class="stage-booted"') == 1 and 'class="fail"' in storm.group(0)

        device = dump_dom(f"{PAGE}/ui/device/{STOPPING_MAC}", netns=lab.server)
        assert 'class="event failed"' in device and "boot menu shows an error" in device
        health = dump_dom(f"{PAGE}/ui/health", netns=lab.server)
        assert re.search(r"<td>dhcp</td><td>server on e2esrv</td><td class=\"up\">up</td>", health), health
        # outcomes are counted by a periodic sweep (every stall/2 s here); a stopped boot only
        # once final (quiet for 5 minutes), so the booted one alone is counted yet
        wanted = ('bootserverd_boots_total{outcome="booted"} 1.0', 'bootserverd_boots_total{outcome="stopped"} 0.0')
        for _ in range(20):
            metrics = lab.server.run(["curl", "-s", f"{PAGE}/metrics"]).stdout
            if all(line in metrics for line in wanted):
                break
            time.sleep(0.5)
        assert all(line in metrics for line in wanted), metrics
