"""The status page from the daemon as shipped: a real browser (headless chromium) shows a
hostname with markup in it as text, the page loads nothing from elsewhere, and an address
outside ``http.ui_allow`` gets 403."""

from __future__ import annotations

import re

from tests.support.browser import dump_dom
from tests.support.http import Daemon, curl

# hostnames are checked by both inventory sources; a school's name is the directory's free text
EVIL = '<script>document.title="owned"</script><img src=x onerror=alert(1)>'
INVENTORY = f"""
schools:
  north: {{}}
  '{EVIL}': {{}}
devices:
  - {{mac: "52:54:00:aa:00:01", hostname: pc1, type: thinclient, school: north}}
  - {{mac: "52:54:00:aa:00:02", hostname: pc2, type: laptop, school: '{EVIL}'}}
"""


def test_page_shows_directory_text_as_text_in_a_real_browser(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    daemon = Daemon(tmp_path / "d", images, inventory=INVENTORY)
    try:
        status, headers, body = daemon.get("/")
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert b"Overview" in body
        dom = dump_dom(daemon.url("/ui/devices"))
        rows = re.findall(r'<tr data-mac="([^"]+)" data-state="([^"]+)"', dom)
        assert sorted(rows) == [("52:54:00:aa:00:01", "not seen"), ("52:54:00:aa:00:02", "not seen")], dom
        assert "<script" not in dom and "<img" not in dom           # no element came from the hostname
        assert "&lt;script&gt;" in dom and "owned" in dom              # ... it is shown as text
        assert "<title>Devices · bootserverd</title>" in dom
        # every link and form stays on the server: nothing is loaded from elsewhere
        assert not re.search(r'(src|href|action)="(https?:)?//', dom)
        device = dump_dom(daemon.url("/ui/device/52-54-00-AA-00-02"))
        assert "&lt;img src=x" in device and "No boot seen" in device
        search = dump_dom(daemon.url("/ui/devices?q=%22%3E%3Cscript%3Ealert(2)%3C/script%3E"))
        assert "<script" not in search and "0 of 2 devices" in search
        assert daemon.get("/ui/nothing")[0] == 404
        assert daemon.get("/", method="POST")[0] == 405
    finally:
        daemon.stop()
    assert "Traceback" not in daemon.log()


def test_addresses_outside_ui_allow_get_403(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    daemon = Daemon(tmp_path / "d", images, inventory=INVENTORY, http_extra="  ui_allow: [127.0.0.2/32]")
    try:
        denied = curl("-o", "/dev/null", "-w", "%{http_code}", daemon.url("/ui/devices"))
        assert denied.stdout == b"403"
        allowed = curl("--interface", "127.0.0.2", "-o", "/dev/null", "-w", "%{http_code}", daemon.url("/ui/devices"))
        assert allowed.stdout == b"200"
        assert daemon.get("/status")[0] == 200                        # the JSON for tools is unchanged
    finally:
        daemon.stop()
    log = daemon.log()
    assert len(re.findall(r"HTTP 127\.0\.0\.1 GET /ui/devices 403: the status page is not open", log)) == 1, log
