"""Figures the reliability runs produce, collected into docs/reliability.md.

A test calls ``record(name, title, rows, note)``; the rows land as JSON in the directory
named by $BOOTSERVERD_FIGURES (set by `make reliability`; unset in make test, where the
short runs record nothing). ``render`` turns that directory into the Markdown page.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

ENV = "BOOTSERVERD_FIGURES"
FULL = os.environ.get("BOOTSERVERD_RELIABILITY") == "full"


def scale(short, full):
    """The size of a run: short in make test, full in make reliability."""
    return full if FULL else short


def record(name: str, title: str, rows: list[tuple[str, object]], note: str = "",
           full: bool | None = None) -> None:
    directory = os.environ.get(ENV)
    if not directory:
        return
    path = Path(directory) / f"{name}.json"
    path.write_text(json.dumps({"title": title, "rows": [[k, str(v)] for k, v in rows],
                                "note": note, "full": FULL if full is None else full,
                                "at": time.time()}, indent=1))


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the process's peak resident set since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine() -> str:
    model = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                  if l.startswith("model name")), "?")
    cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
    return f"{cores} cores ({model}), Linux {platform.release()}, Python {platform.python_version()}"


ORDER = ("fuzz", "fuzz_service", "dhcp_flood", "tftp_storm", "nbd_silent", "http_slow", "http_slowloris",
         "dhcp_kill9", "dhcp_restart", "disk_full", "disk_full_diff", "disk_full_snapshot", "slapd_kill", "nbd_image_swap", "dhcp_link")


def render(directory: Path, out: Path) -> None:
    found = {p.stem: json.loads(p.read_text()) for p in sorted(Path(directory).glob("*.json"))}
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    lines = ["# Reliability figures",
             "",
             "Written by `make reliability` (tests/reliability/run.py); do not edit by hand.",
             f"Machine: {machine()}. The machine was **shared** with other engineers' test runs",
             "while these were measured, so rates and times are lower bounds; counts are exact.",
             f"Run finished {time.strftime('%Y-%m-%d %H:%M', time.localtime())}.", ""]
    for name in names:
        fig = found[name]
        size = "" if fig.get("full") else " — short run (make test size)"
        lines += [f"## {fig['title']}{size}", "", "| what | figure |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in fig["rows"]]
        if fig.get("note"):
            lines += ["", fig["note"]]
        lines.append("")
    out.write_text("\n".join(lines))
