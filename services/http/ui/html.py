"""The status page's HTML (pure): every value from the directory or a client is escaped here.

Pages: overview (/), devices (/ui/devices), one device (/ui/device/<mac>), images
(/ui/images), health (/ui/health). Plain links and a GET form: it works without JavaScript and
on a phone; the overview refreshes itself every minute (a meta refresh)."""

from __future__ import annotations

import time
from html import escape
from urllib.parse import urlencode

from bootserverd.boot.report import format_timeline
from services.http.ui import svg
from services.http.ui.view import STATES, DeviceRow, ImageRow, rogue_servers

STYLE = """
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:.5em 1em;display:flex;flex-wrap:wrap;gap:1em;align-items:baseline}
header a{color:#cfd8dc;text-decoration:none}header a.on{color:#fff;font-weight:600}
header b{font-size:1.1em;margin-right:1em}main{padding:0 1em 2em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{padding:.25em .5em;border-bottom:1px solid #e0e0e0;text-align:left;white-space:nowrap}
th{background:#eceff1;position:sticky;top:0}td.why{white-space:normal;min-width:14em;max-width:30em}.scroll{overflow-x:auto}
.banner{background:#c62828;color:#fff;padding:.6em 1em;margin:1em 0;border-radius:4px}
.warn{background:#ef6c00}.muted{color:#777}
.state{padding:0 .4em;border-radius:3px;color:#fff;font-size:.9em}
.s-booted{background:#2e7d32}.s-attached{background:#6cae5a}.s-in-progress{background:#1976d2}
.s-stopped{background:#c62828}.s-not-seen{background:#9e9e9e}.up{color:#2e7d32}.down{color:#c62828;font-weight:600}
.counts a{margin-right:1em;text-decoration:none}form{margin:1em 0;display:flex;flex-wrap:wrap;gap:.5em}
svg{width:100%;height:auto;background:#fff;border:1px solid #e0e0e0}
svg .label{font-size:11px;text-anchor:end}svg .tick{font-size:10px;fill:#777;text-anchor:middle}
svg .grid{stroke:#eee}svg .fail{font-size:12px;font-weight:bold}
.legend span{margin-right:1em}.legend i{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.bar{display:inline-block;width:8em;height:.8em;background:#e0e0e0;vertical-align:middle}.bar i{display:block;height:100%;background:#5b8fd1}
pre{background:#fff;border:1px solid #e0e0e0;padding:.5em;overflow-x:auto}
"""
PAGE_ROWS = 500     # device rows per page: a phone and the reactor both prefer pages
NAV = (("/", "Overview"), ("/ui/devices", "Devices"), ("/ui/images", "Images"), ("/ui/health", "Health"))


def e(value) -> str:
    return "" if value is None else escape(str(value), quote=True)


def when(epoch: float | None, now: float) -> str:
    if not epoch:
        return "-"
    local = time.localtime(epoch)
    same_day = time.localtime(now)[:3] == local[:3]
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M", local)


def size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def layout(title: str, here: str, body: str, banners: str = "", refresh: int | None = None) -> str:
    nav = "".join(f'<a href="{href}"{" class=on" if href == here else ""}>{label}</a>' for href, label in NAV)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">{meta}'
            f'<link rel="icon" href="data:,">'
            f'<title>{e(title)} · bootserverd</title><style>{STYLE}</style></head>'
            f'<body><header><b>bootserverd</b>{nav}</header><main>{banners}<h1>{e(title)}</h1>{body}</main></body></html>')


def banners(health: dict, now: float) -> str:
    out = []
    for rogue in rogue_servers(health):
        if now - (rogue.get("last_seen") or 0) <= 3600:
            out.append(f'<div class="banner" id="rogue">Another DHCP server answers on {e(rogue.get("interface"))}: '
                       f'{e(rogue.get("server_ip"))} ({e(rogue.get("server_mac"))}) offered '
                       f'{e(rogue.get("last_offered"))} to {e(rogue.get("last_client"))}, '
                       f'last seen {when(rogue.get("last_seen"), now)}. Find and unplug it.</div>')
    for name, service in (health.get("services") or {}).items():
        if not service.get("up"):
            out.append(f'<div class="banner">Service {e(name)} is enabled but not running.</div>')
    problem = directory_problem(health.get("directory") or {})
    if problem:
        out.append(f'<div class="banner warn" id="directory">Directory: {e(problem)}</div>')
    return "".join(out)


def directory_problem(directory: dict) -> str | None:
    """What is wrong with the directory feed, in a sentence (None when nothing is)."""
    if directory.get("problem"):
        return f'{directory.get("file")}: {directory["problem"]}'
    if directory.get("connection") == "disconnected":
        return f'the replica {directory.get("uri")} is unavailable ({directory.get("detail")}); serving the devices known'
    replication = directory.get("replication") or {}
    if replication.get("state") in ("behind", "cannot compare"):
        return (f'the replica is {replication["state"]} the centre {replication.get("centre") or ""} '
                f'({replication.get("lag_seconds", 0):.0f} s{"; " + str(replication["error"]) if replication.get("error") else ""})')
    return None


def state_badge(state: str) -> str:
    return f'<span class="state s-{state.replace(" ", "-")}">{e(state)}</span>'


def counts_line(counts) -> str:
    links = "".join(f'<a href="/ui/devices?{urlencode({"state": s})}">{state_badge(s)} {counts.get(s, 0)}</a>'
                    for s in STATES)
    return f'<p class="counts">{links}</p>'


def overview(stopped: list[DeviceRow], counts, storm: list[dict], health: dict, now: float) -> str:
    """``stopped``: the devices whose last boot stopped; ``counts``: devices by state."""
    body = [counts_line(counts)]
    if storm:
        roots = [b for b in storm if b["state"] in ("booted", "root attached")]
        last = max((b["started"] + b["seconds"] for b in roots), default=None)
        body.append(f'<h2>Last boot storm</h2><p>{len(storm)} boots from {when(storm[0]["started"], now)}; '
                    f'{len(roots)} reached their root'
                    + (f', the last {last - storm[0]["started"]:.0f} s after the first DHCP' if last else "")
                    + ".</p>")
    else:
        body.append("<h2>Last boot storm</h2>")
    body.append(svg.legend() + svg.storm(storm, now))
    if stopped:
        body.append("<h2>Stopped</h2>" + device_table(stopped[:50], now))
    body.append(services_table(health))
    return layout("Overview", "/", "".join(body), banners(health, now), refresh=60)


def device_table(rows: list[DeviceRow], now: float) -> str:
    out = ['<div class="scroll"><table id="devices"><tr><th>Host</th><th>MAC</th><th>Last boot</th><th>Reached</th>'
           '<th>When</th><th>Took</th><th>Booted image</th><th>Assigned image</th><th>IP</th><th>School</th>'
           '<th>Type</th></tr>']
    for r in rows:
        boot = r.boot or {}
        reached = boot.get("stage_label") or "-"
        if r.state == "stopped":
            reached = f'{reached}; {boot.get("failure") or boot.get("state", "")}'
        assigned = r.image or "none"
        if r.next_image and r.next_image != r.image:
            assigned += f" (next: {r.next_image})"
        host = r.hostname or ("unknown device" if not r.known else "-")
        took = f'{boot["seconds"]:.1f} s' if boot else "-"
        out.append(f'<tr data-mac="{e(r.mac)}" data-state="{e(r.state)}"><td><a href="/ui/device/{e(r.mac)}">{e(host)}</a>'
                   f'{"" if r.enabled else " <span class=muted>(disabled)</span>"}</td><td>{e(r.mac)}</td>'
                   f'<td>{state_badge(r.state)}</td><td class="why">{e(reached)}</td>'
                   f'<td>{when(boot.get("started"), now)}</td><td>{took}</td><td>{e(r.running or "-")}</td>'
                   f'<td>{e(assigned)}</td><td>{e(boot.get("ip") or "-")}</td><td>{e(r.school or "-")}</td>'
                   f'<td>{e(r.type or "-")}</td></tr>')
    out.append("</table></div>")
    return "".join(out)


def _select(name: str, label: str, options, chosen: str) -> str:
    items = [f'<option value="">{e(label)}: all</option>']
    items += [f'<option value="{e(o)}"{" selected" if o == chosen else ""}>{e(o)}</option>' for o in options]
    return f'<select name="{name}" aria-label="{e(label)}">{"".join(items)}</select>'


def devices(rows: list[DeviceRow], shown: list[DeviceRow], filters: dict, health: dict, now: float) -> str:
    schools = sorted({r.school for r in rows if r.school})
    types = sorted({r.type for r in rows if r.type})
    form = ('<form method="get" action="/ui/devices">'
            + _select("school", "School", schools, filters.get("school", ""))
            + _select("type", "Type", types, filters.get("type", ""))
            + _select("state", "State", STATES, filters.get("state", ""))
            + f'<input type="search" name="q" value="{e(filters.get("q", ""))}" placeholder="MAC, hostname or IP">'
            + '<button>Show</button></form>')
    pages = max(1, -(-len(shown) // PAGE_ROWS))
    page = min(max(1, filters.get("page") or 1), pages)
    first = (page - 1) * PAGE_ROWS
    links = ""
    if pages > 1:
        query = {k: v for k, v in filters.items() if v and k != "page"}
        nav = [f'<a href="/ui/devices?{e(urlencode({**query, "page": n}))}">{label}</a>'
               for n, label in ((page - 1, "← previous"), (page + 1, "next →")) if 1 <= n <= pages]
        links = f'<p class="pages">page {page} of {pages} {" ".join(nav)}</p>'
    body = (form + f"<p>{len(shown)} of {len(rows)} devices.</p>" + links
            + device_table(shown[first:first + PAGE_ROWS], now) + links)
    return layout("Devices", "/ui/devices", body, banners(health, now))


def device(row: DeviceRow | None, mac: str, health: dict, now: float) -> str:
    if row is None:
        return layout(f"Device {mac}", "", "<p>Not in the directory and no boot seen.</p>", banners(health, now))
    boot = row.boot
    facts = [("MAC", row.mac), ("Hostname", row.hostname), ("School", row.school), ("Type", row.type),
             ("In the directory", "yes" if row.known else "no"), ("Enabled", "yes" if row.enabled else "no"),
             ("Assigned image", row.image), ("Rollout's next image", row.next_image)]
    body = ["<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v if v is not None else '-')}</td></tr>"
                                for k, v in facts) + "</table>"]
    if boot is None:
        body.append("<p>No boot seen since the daemon started.</p>")
    else:
        body.append(f'<h2>Last boot: {state_badge(row.state)} {when(boot["started"], now)}, '
                    f'{boot["seconds"]:.1f} s, reached {e(boot.get("stage_label"))}</h2>')
        body.append(svg.legend() + svg.device(boot))
        body.append(f"<pre>{e(format_timeline(boot))}</pre>")
    return layout(f"Device {row.hostname or row.mac}", "", "".join(body), banners(health, now))


def kernels_cell(row: ImageRow) -> str:
    """Each kernel of the image: whether it has a Secure Boot signature."""
    return "<br>".join(f'{e(label)}{" (default)" if label == row.default_kernel else ""}: '
                       + ("has a signature" if signed else '<b class="down">NO signature</b>')
                       for label, signed in row.kernel_signed.items()) or "-"


def images(image_rows: list[ImageRow], diffs: dict, health: dict, now: float) -> str:
    out = ['<div class="scroll"><table id="images"><tr><th>Image</th><th>Release</th><th>Size</th><th>sha256</th>'
           '<th>Assigned to</th><th>Running on</th><th>Next image for</th><th>Kernels (Secure Boot)</th></tr>']
    for i in image_rows:
        out.append(f'<tr data-image="{e(i.name)}"><td>{e(i.name)}</td><td>{e(i.release)}</td><td>{size(i.size)}</td>'
                   f'<td><code>{e(i.sha256[:12])}</code></td><td>{i.assigned}</td><td>{i.running}</td>'
                   f'<td>{i.next_for}</td><td>{kernels_cell(i)}</td></tr>')
    out.append("</table></div>")
    if not image_rows:
        out.append('<p class="muted">No image is published.</p>')
    for x in (i.exposure for i in image_rows if i.exposure):
        out.append(f'<div class="banner warn unsigned" data-image="{e(x.image)}">{e(x.line())}. Fix: install '
                   "Debian's signed <code>linux-image-amd64</code> in the image.</div>")
    out.append("<h2>Diff cache</h2><table>" + "".join(
        f"<tr><th>{e(k.replace('_', ' '))}</th><td>{size(v) if k.endswith('bytes') else e(v)}</td></tr>"
        for k, v in diffs.items()) + "</table>")
    return layout("Images and rollout", "/ui/images", "".join(out), banners(health, now))


def services_table(health: dict) -> str:
    out = ['<h2>Services</h2><div class="scroll"><table id="services"><tr><th>Service</th><th>Listening</th>'
           '<th>State</th><th>Figures</th></tr>']
    for name, s in (health.get("services") or {}).items():
        figures = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in (s.get("status") or {}).items()
                            if isinstance(v, (int, float)))
        out.append(f'<tr><td>{e(name)}</td><td>{e(s.get("listen"))}</td>'
                   f'<td class="{"up" if s.get("up") else "down"}">{"up" if s.get("up") else "down"}</td>'
                   f'<td>{e(figures)}</td></tr>')
    out.append("</table></div>")
    return "".join(out)


def health_page(health: dict, now: float) -> str:
    body = [services_table(health)]
    directory = health.get("directory") or {}
    replication = directory.get("replication") or {}
    facts = (("source", directory.get("source")), ("where", directory.get("uri") or directory.get("file")),
             ("connection", directory.get("connection")), ("detail", directory.get("detail") or directory.get("problem")),
             ("centre", replication.get("centre")), ("replication", replication.get("state")),
             ("lag", f'{replication["lag_seconds"]:.0f} s' if "lag_seconds" in replication else None),
             ("devices", directory.get("devices")))
    body.append('<h2>Directory</h2><table id="directory-facts">' + "".join(
        f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts if v not in (None, "")) + "</table>")
    dhcp = ((health.get("services") or {}).get("dhcp") or {}).get("status") or {}
    pools = dhcp.get("pools") or []
    if pools:
        body.append('<h2>Address pools</h2><table id="pools"><tr><th>Subnet</th><th>Used</th><th></th></tr>')
        for p in pools:
            share = p["used"] / p["size"] if p.get("size") else 0.0
            body.append(f'<tr><td>{e(p.get("subnet"))}</td><td>{p.get("used")} of {p.get("size")}</td>'
                        f'<td><span class="bar"><i style="width:{share * 100:.0f}%"></i></span></td></tr>')
        body.append("</table>")
    rogues = rogue_servers(health)
    body.append("<h2>Other DHCP servers seen</h2>")
    if rogues:
        body.append('<table id="rogues"><tr><th>Server</th><th>MAC</th><th>Interface</th><th>Offered</th>'
                    '<th>To</th><th>First seen</th><th>Last seen</th></tr>' + "".join(
                        f'<tr><td>{e(r.get("server_ip"))}</td><td>{e(r.get("server_mac"))}</td><td>{e(r.get("interface"))}</td>'
                        f'<td>{e(r.get("last_offered"))}</td><td>{e(r.get("last_client"))}</td>'
                        f'<td>{when(r.get("first_seen"), now)}</td><td>{when(r.get("last_seen"), now)}</td></tr>'
                        for r in rogues) + "</table>")
    else:
        body.append('<p class="muted">None.</p>')
    return layout("Health", "/ui/health", "".join(body), banners(health, now))
