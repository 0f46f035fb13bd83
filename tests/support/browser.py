"""Debian's chromium, headless: the DOM a page leaves after loading (scripts run) and a screenshot."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
         "--disable-background-networking", "--disable-sync", "--disable-default-apps", "--hide-scrollbars")


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "chromium is missing (make test installs deps/apt/ui.txt)"
    return path


def _run(args: list[str], timeout: float, netns=None) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
        runner = netns.run if netns is not None else (
            lambda a, timeout: subprocess.run(a, capture_output=True, text=True, timeout=timeout))
        return runner(argv, timeout=timeout)


def dump_dom(url: str, timeout: float = 60, netns=None) -> str:
    """The page's DOM after load, serialised by the browser (what a person's browser shows)."""
    result = _run(["--dump-dom", url], timeout, netns)
    assert result.returncode == 0 and "<html" in result.stdout, result.stderr[-2000:]
    return result.stdout


def screenshot(url: str, out: Path, size: str = "1280,1600", timeout: float = 60, netns=None) -> Path:
    result = _run([f"--window-size={size}", f"--screenshot={out}", url], timeout, netns)
    assert result.returncode == 0 and out.exists(), result.stderr[-2000:]
    return out
