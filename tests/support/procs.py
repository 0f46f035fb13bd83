"""Ending a process a test or benchmark started: SIGTERM, then SIGKILL if it does not go."""

from __future__ import annotations

import subprocess


def end(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate ``proc`` (started by the caller) and reap it; kill it after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
