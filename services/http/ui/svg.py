"""Pictures of boots as inline SVG (pure; every text escaped): the storm's Gantt chart, one row
per device, and one device's timeline, one lane per service."""

from __future__ import annotations

from html import escape

from bootserverd.boot.stages import LABELS, STAGES

COLOURS = {"dhcp": "#5b8fd1", "loader": "#9a6fc4", "kernel": "#e09a2c", "root": "#6cae5a",
           "booted": "#2e7d32"}
FAILED = "#c62828"
WIDTH, LABEL, ROW, AXIS = 960, 170, 16, 24
LANES = ("dhcp", "tftp", "http", "menu", "nbd")


def _a(value) -> str:
    return escape(str(value), quote=True)


def _ticks(span: float) -> tuple[float, ...]:
    """About six round tick positions over 0..span seconds."""
    for step in (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600):
        if span / step <= 8:
            break
    count = int(span // step) + 1
    return tuple(i * step for i in range(count))


def _axis(span: float, top: int, height: int) -> list[str]:
    scale = (WIDTH - LABEL - 10) / span
    out = []
    for t in _ticks(span):
        x = LABEL + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + height}" class="grid"/>'
                   f'<text x="{x:.1f}" y="{top - 6}" class="tick">{t:g} s</text>')
    return out


def _stage_spans(boot: dict, end: float) -> list[tuple[str, float, float]]:
    """(stage, from, to) offsets: each reached stage from its first success to the next one."""
    starts = {}
    for e in boot["events"]:
        if e["ok"] and e["stage"] in STAGES and e["stage"] not in starts:
            starts[e["stage"]] = e["offset"]
    ordered = sorted(starts.items(), key=lambda kv: (kv[1], STAGES.index(kv[0])))
    spans = []
    for i, (stage, begin) in enumerate(ordered):
        finish = ordered[i + 1][1] if i + 1 < len(ordered) else max(end, begin)
        spans.append((stage, begin, finish))
    return spans


def storm(boots: list[dict], now: float) -> str:
    """One row per boot (oldest first), DHCP → loader → kernel → root coloured by stage,
    failed events marked; each row links to the device's page."""
    if not boots:
        return '<p class="muted">No boot seen since the daemon started.</p>'
    t0 = min(b["started"] for b in boots)
    ends = []
    for b in boots:
        end = b["seconds"] if b["state"] != "in progress" else max(b["seconds"], now - b["started"])
        ends.append(end)
    span = max(max(b["started"] - t0 + end for b, end in zip(boots, ends)), 1.0) * 1.02
    scale = (WIDTH - LABEL - 10) / span
    height = AXIS + ROW * len(boots) + 4
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" class="gantt" '
           f'role="img" aria-label="boot timeline of {len(boots)} devices">']
    out += _axis(span, AXIS, ROW * len(boots))
    for row, (boot, end) in enumerate(zip(boots, ends)):
        y = AXIS + row * ROW
        left = LABEL + (boot["started"] - t0) * scale
        name = boot.get("hostname") or boot["mac"]
        out.append(f'<a href="/ui/device/{_a(boot["mac"])}" class="row" data-mac="{_a(boot["mac"])}">'
                   f'<title>{escape(name)}: {escape(boot["state"])} ({boot["seconds"]:.1f} s)</title>'
                   f'<text x="{LABEL - 6}" y="{y + ROW - 4}" class="label">{escape(name[:24])}</text>')
        for stage, begin, finish in _stage_spans(boot, end):
            width = max((finish - begin) * scale, 3.0)
            out.append(f'<rect x="{left + begin * scale:.1f}" y="{y + 2}" width="{width:.1f}" '
                       f'height="{ROW - 4}" fill="{COLOURS[stage]}" class="stage-{stage}"/>')
        for e in boot["events"]:
            if not e["ok"]:
                x = left + (e["offset"] + e["seconds"]) * scale
                out.append(f'<text x="{x:.1f}" y="{y + ROW - 3}" class="fail" fill="{FAILED}">✕'
                           f'<title>{escape(e["what"])}</title></text>')
        out.append("</a>")
    out.append("</svg>")
    return "".join(out)


def device(boot: dict) -> str:
    """One boot's events on a time axis, a lane per service; failures in red."""
    span = max(max((e["offset"] + e["seconds"] for e in boot["events"]), default=0.0), 1.0) * 1.05
    scale = (WIDTH - LABEL - 10) / span
    lane = ROW + 8
    height = AXIS + lane * len(LANES) + 4
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" class="timeline" '
           f'role="img" aria-label="boot timeline of {_a(boot["mac"])}">']
    out += _axis(span, AXIS, lane * len(LANES))
    for i, kind in enumerate(LANES):
        out.append(f'<text x="{LABEL - 6}" y="{AXIS + i * lane + ROW}" class="label">{kind.upper()}</text>')
    for e in boot["events"]:
        if e["kind"] not in LANES:
            continue
        y = AXIS + LANES.index(e["kind"]) * lane + 2
        colour = COLOURS.get(e["stage"], "#888") if e["ok"] else FAILED
        out.append(f'<rect x="{LABEL + e["offset"] * scale:.1f}" y="{y}" width="{max(e["seconds"] * scale, 4.0):.1f}" '
                   f'height="{ROW}" fill="{colour}" class="{"event" if e["ok"] else "event failed"}">'
                   f'<title>+{e["offset"]:.2f} s {escape(e["what"])}</title></rect>')
    out.append("</svg>")
    return "".join(out)


def legend() -> str:
    items = "".join(f'<span><i style="background:{COLOURS[s]}"></i>{escape(LABELS[s])}</span>' for s in STAGES)
    return f'<p class="legend">{items}<span><b style="color:{FAILED}">✕</b> failed</span></p>'
