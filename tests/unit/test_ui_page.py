"""The status page's pure parts: rows from the boot report, the storm picture, escaping, access."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Network
from types import MappingProxyType

from bootserverd.images.signature import Exposure
from bootserverd.model.objects import Defaults, Device, InventoryRecords
from bootserverd.model.snapshot import Inventory
from services.http.ui import html, svg, view
from services.http.ui.access import allowed_networks, may_see
from tests.support.classroom import IMAGE, Clock, inventory, morning

EVIL = '<script>alert("x")</script>'
HEALTH = {"services": {}, "directory": {"source": "yaml", "file": "inventory.yaml", "problem": None}}


def _inputs(inv, report, clock, health=HEALTH, reports=None):
    return view.PageInputs(clock.now, inv, report.summaries(), [{"name": IMAGE, "size": 10, "sha256": "ab" * 32}],
                           health, {"cached_bytes": 0}, reports or {})


def test_rows_say_where_each_device_stopped():
    clock = Clock()
    inv = inventory(50)
    report, _ = morning(inv, clock, failing_every=25)
    rows = view.device_rows(_inputs(inv, report, clock))
    by_state = Counter(r.state for r in rows)
    assert by_state["stopped"] == 2 and by_state["booted"] + by_state["attached"] == 48
    stopped = [r for r in rows if r.state == "stopped"]
    assert {r.boot["stage"] for r in stopped} == {"loader"}       # the kernel download stalled
    assert all("vmlinuz" in r.boot["failure"] for r in stopped)
    booted = next(r for r in rows if r.state == "booted")
    assert booted.running == booted.image == inv.image_for(inv.device(booted.mac))
    assert booted.boot["stage"] == "booted"


def test_unknown_macs_seen_recently_are_listed():
    clock = Clock()
    inv = inventory(3)
    report, _ = morning(inventory(5), clock, failing_every=0)      # two MACs the directory lacks
    rows = view.device_rows(_inputs(inv, report, clock))
    assert [r.known for r in rows].count(False) == 2
    assert all(r.boot is not None for r in rows if not r.known)
    clock.now += view.UNKNOWN_RECENT + 1
    assert [r.known for r in view.device_rows(_inputs(inv, report, clock))].count(False) == 0


def test_filters_and_search():
    clock = Clock()
    inv = inventory(60)
    report, _ = morning(inv, clock)
    rows = view.device_rows(_inputs(inv, report, clock))
    assert {r.school for r in view.filter_rows(rows, school="north")} == {"north"}
    assert len(view.filter_rows(rows, search="CLASS2-PC03")) == 1
    assert len(view.filter_rows(rows, search=rows[7].mac)) == 1
    assert all(r.state == "stopped" for r in view.filter_rows(rows, state="stopped"))


def test_last_storm_is_the_latest_wave():
    boots = [{"started": t} for t in (0, 10, 20, 5000, 5010, 5300)]
    assert [b["started"] for b in view.last_storm(boots)] == [5000, 5010, 5300]


def test_storm_picture_has_a_row_per_boot_and_marks_failures():
    clock = Clock()
    inv = inventory(30)
    report, _ = morning(inv, clock, failing_every=10)
    storm = view.last_storm(report.summaries())
    picture = svg.storm(storm, clock.now)
    assert picture.count('class="row"') == 30
    assert picture.count('class="fail"') == 3
    assert picture.count('class="stage-booted"') == 27


def test_every_page_escapes_directory_and_client_text():
    clock = Clock()
    inv = inventory(4, hostname=lambda i: EVIL if i == 1 else f"pc{i}")
    report, _ = morning(inv, clock, failing_every=0)
    health = {"services": {"dhcp": {"up": True, "listen": "server on eth0",
                                    "status": {"rogue_servers": [{"server_ip": EVIL, "server_mac": EVIL,
                                                                  "interface": EVIL, "last_offered": EVIL,
                                                                  "last_client": EVIL, "first_seen": clock.now,
                                                                  "last_seen": clock.now}],
                                               "pools": [{"subnet": EVIL, "size": 10, "used": 3}]}}},
              "directory": {"source": "yaml", "file": EVIL, "problem": EVIL}}
    inputs = _inputs(inv, report, clock, health)
    rows = view.device_rows(inputs)
    evil_row = next(r for r in rows if r.hostname == EVIL)
    pages = [html.overview(rows, Counter(r.state for r in rows), view.last_storm(report.summaries()), health, clock.now),
             html.devices(rows, rows, {"q": EVIL, "school": EVIL}, health, clock.now),
             html.device(evil_row, evil_row.mac, health, clock.now),
             html.images(view.image_rows(inputs, rows), {"x": EVIL}, health, clock.now),
             html.health_page(health, clock.now)]
    for page in pages:
        assert "<script" not in page and "&lt;script&gt;" in page, page[:2000]


def test_images_count_assigned_and_running_devices():
    clock = Clock()
    inv = inventory(10)
    report, _ = morning(inv, clock, failing_every=0)
    inputs = _inputs(inv, report, clock, reports={inv.devices[0].mac: {"current": IMAGE}})
    [row] = view.image_rows(inputs, view.device_rows(inputs))
    south = sum(1 for d in inv.devices if d.school == "south")    # their school names the next image
    assert row.assigned == 10 - south


def test_access_defaults_to_loopback_and_served_subnets():
    served = [IPv4Network("10.1.0.0/16")]
    networks = allowed_networks(None, served)
    assert may_see(networks, "127.0.0.1") and may_see(networks, "10.1.2.3")
    assert may_see(networks, "::ffff:10.1.2.3")                   # a dual-stack listener's view
    assert not may_see(networks, "192.168.1.5") and not may_see(networks, "::1") and not may_see(networks, "?")
    only = allowed_networks((IPv4Network("192.168.1.0/24"),), served)
    assert may_see(only, "192.168.1.5") and not may_see(only, "127.0.0.1")


def test_a_device_without_a_boot_and_an_unknown_page():
    inv = Inventory(InventoryRecords(devices=(Device("52:54:00:00:00:01", "pc"),), schools=MappingProxyType({}),
                                     defaults=Defaults(image=IMAGE)), {IMAGE: object()}, None)
    inputs = view.PageInputs(0.0, inv, [], [], HEALTH, {})
    [row] = view.device_rows(inputs)
    assert row.state == "not seen" and row.image == IMAGE
    assert "No boot seen" in html.device(row, row.mac, HEALTH, 0.0)
    assert "No boot seen" in svg.storm([], 0.0)


def test_devices_come_in_pages_that_keep_the_filters():
    clock = Clock()
    inv = inventory(1200)
    report, _ = morning(inv, clock)
    rows = view.device_rows(_inputs(inv, report, clock))
    first = html.devices(rows, rows, {"school": "north", "page": 1}, HEALTH, clock.now)
    assert first.count("<tr data-mac=") == html.PAGE_ROWS and "page 1 of 3" in first
    assert 'href="/ui/devices?school=north&amp;page=2">next' in first and "previous" not in first
    last = html.devices(rows, rows, {"page": 99}, HEALTH, clock.now)
    assert last.count("<tr data-mac=") == 1200 - 2 * html.PAGE_ROWS and "page 3 of 3" in last


def test_overview_counts_match_the_device_list():
    clock = Clock()
    inv = inventory(100)
    report, _ = morning(inventory(104), clock)             # 4 boots of MACs the directory lacks
    inputs = view.PageInputs(clock.now, inv, report.summaries(events=False), [], HEALTH, {})
    rows = view.device_rows(inputs)
    counts, stopped = view.summary_rows(inputs, "stopped")
    assert counts == Counter(r.state for r in rows)
    assert [r.mac for r in stopped] == sorted((r.mac for r in rows if r.state == "stopped"),
                                               key=[b["mac"] for b in inputs.boots].index)


def test_images_page_says_which_kernels_have_no_signature_and_who_is_at_risk():
    clock = Clock()
    inv = inventory(12)
    report, _ = morning(inv, clock, failing_every=0)
    exposure = Exposure(IMAGE, ("6.1.0-18-amd64",), ("class1-pc01", EVIL), 12)
    summary = {"name": IMAGE, "size": 10, "sha256": "ab" * 32, "default_kernel": "6.1.0-18-amd64",
               "kernel_signed": {"6.1.0-18-amd64": False, EVIL: True}}
    inputs = view.PageInputs(clock.now, inv, report.summaries(), [summary], HEALTH, {}, exposures={IMAGE: exposure})
    [row] = view.image_rows(inputs, view.device_rows(inputs))
    assert row.exposure is exposure and row.default_kernel == "6.1.0-18-amd64"
    page = html.images([row], {}, HEALTH, clock.now)
    assert "6.1.0-18-amd64 (default): <b class=\"down\">NO signature</b>" in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;: has a signature" in page and "<script" not in page
    assert (f'<div class="banner warn unsigned" data-image="{IMAGE}">image {IMAGE}: kernel 6.1.0-18-amd64 has NO '
            "Secure Boot signature") in page
    assert "12 devices assigned it, at risk if they boot by UEFI: class1-pc01, &lt;script" in page
    assert "(+10 more)" in page
    plain = dict(summary, kernel_signed={"6.1.0-18-amd64": True})
    inputs = view.PageInputs(clock.now, inv, report.summaries(), [plain], HEALTH, {})
    page = html.images(view.image_rows(inputs, view.device_rows(inputs)), {}, HEALTH, clock.now)
    assert "NO signature" not in page and "unsigned" not in page and "has a signature" in page
