"""keepalived as the tests run it: the shipped example (etc/keepalived.conf.example) adapted
to a test's interface, service address and priority, nothing else changed."""

from __future__ import annotations

import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "etc" / "keepalived.conf.example"


def keepalived_conf(iface: str, vip: str, priority: int) -> str:
    text = EXAMPLE.read_text()
    for old, new in (("interface eth0", f"interface {iface}"), ("dev eth0", f"dev {iface}"),
                     ("10.0.0.1/24", f"{vip}/24"), ("priority 150", f"priority {priority}")):
        assert old in text, old           # the example keeps the lines the tests adapt
        text = text.replace(old, new)
    return text


def keepalived_argv(conf: Path, run_dir: Path, name: str) -> list[str]:
    """In the foreground, logging to the console, its PID files in ``run_dir``."""
    return ["keepalived", "-n", "-l", "-P", "-f", str(conf), "-p", str(run_dir / f"ka-{name}.pid"),
            "-r", str(run_dir / f"kv-{name}.pid"), "-c", str(run_dir / f"kc-{name}.pid")]


def holds(ns, iface: str, vip: str) -> bool:
    return f" {vip}/24 " in ns.run(["ip", "-o", "-4", "addr", "show", "dev", iface]).stdout


def seconds_until(predicate, timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``predicate()`` held (polled every ``step``), None if not within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    return None
