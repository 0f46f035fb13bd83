"""A thin client runs on through restarts of its server (#16 part 1, the real guest).

The real Debian image boots to multi-user in the lab, its root mounted by the kernel's NBD client
(Debian 12's nbd-client in Debian's initramfs, netlink, no dead-connection timeout), with the
image's reader unit on (``bootserverd.e2e_reader=1``: caches dropped, files of the squashfs root
read without end, a line on the console about twice a second). bootserverd runs under the
supervisor that speaks systemd's notify and fd-store protocol (BootLab supervised=True) and is
restarted under the reading guest: SIGTERM then start (`systemctl restart`, a package upgrade),
and kill -9 then start 0.1 s later (a crash under Restart=on-failure, RestartSec's default).
The guest must read on without one error: none from the reader, none from its kernel.

One guest for both tests (a boot is ~2 min of TCG); the kill -9 test runs on after the SIGTERM
one, and alone it boots its own.
"""

from __future__ import annotations

import itertools
import re
import signal
import time

import pytest

from tests.e2e.debian_image import FAILURES, MARKER, READER, debian_image
from tests.e2e import reader
from tests.e2e.harness import KERNEL_ARGS, BootLab, Qemu
from tests.e2e.reader import Round, parse

# what the guest's console must never show: the reader's failures and the kernel's about the root
ERRORS = (f"{READER} error", "I/O error", "Input/output error", "SQUASHFS error", "Dead connection",
          "Receive control failed", "Send control failed", "Unexpected reply", "Possible stuck request",
          "Connection timed out", "Kernel panic")
ROUNDS_AFTER = 10          # reader rounds (~0.5 s each) that must follow a restart


@pytest.fixture(scope="module")
def image():
    return debian_image()


@pytest.fixture(scope="module")
def client(tmp_path_factory, image):
    """(lab, guest): the Debian client at multi-user, reading its root, its server supervised."""
    tmp = tmp_path_factory.mktemp("restart")
    with BootLab(tmp, image.path, image.name, boot={"kernel_args": f"{KERNEL_ARGS} bootserverd.e2e_reader=1"},
                 supervised=True) as lab:
        guest = Qemu(lab.qemu_argv(firmware="bios", memory=1024))
        lab.guests.append(guest)
        found, _ = guest.wait_for((MARKER, *FAILURES), timeout=400)
        assert found == MARKER, explain(lab, guest)
        assert len(rounds(guest, since=0.0, count=3, timeout=180)) >= 3, explain(lab, guest)
        yield lab, guest


def errors(guest: Qemu) -> list[str]:
    return [line for _, line in list(guest.stamped) if any(e in line for e in ERRORS)]


def rounds(guest: Qemu, since: float, count: int, timeout: float) -> list[Round]:
    return reader.rounds(guest, since, count, timeout, errors)


def explain(lab: BootLab, guest: Qemu) -> str:
    return ("guest console (last 60 lines):\n" + "\n".join(line for _, line in guest.stamped[-60:]) +
            "\n\nbootserverd log (last 60 lines):\n" + "\n".join(lab.daemon.log().splitlines()[-60:]))


def logged(lab: BootLab, mark: int, text: str, timeout: float = 10.0) -> bool:
    """``text`` in a daemon log line after the first ``mark`` lines (the log is followed in a thread)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in lab.daemon.log().splitlines()[mark:]):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def restart_under_reading(lab: BootLab, guest: Qemu, sig: int, pause: float) -> tuple[int, str]:
    """Restart the server while the guest reads; check the guest read on, error-free, and print
    the stall. Returns (the daemon log's line count before, the guest's NBD client address)."""
    assert not errors(guest), explain(lab, guest)
    before = rounds(guest, since=time.monotonic(), count=2, timeout=30)   # reading right now
    assert len(before) == 2, explain(lab, guest)
    connected = re.findall(r"NBD (10\.47\.0\.\d+:\d+) connected to export", lab.daemon.log())
    assert len(connected) == 1, lab.daemon.log()
    mark = len(lab.daemon.log().splitlines())
    signalled = time.monotonic()
    stall = lab.daemon.restart(sig, pause=pause)
    ready = signalled + stall
    after = rounds(guest, since=ready, count=ROUNDS_AFTER, timeout=120)
    # after a kill -9 the new process answers what the dead one had read and not answered
    # (nbd/inflight.py): the kernel, which has no timeout, would otherwise wait for ever
    assert not errors(guest), "\n".join(errors(guest)) + "\n\n" + explain(lab, guest)
    assert len(after) >= ROUNDS_AFTER, explain(lab, guest)
    assert after[0].number > before[-1].number and after[-1].bytes > before[-1].bytes
    # the longest pause in the reading around the restart: between two lines on the host's clock,
    # and the longest single file read the guest timed itself
    window = [r for r in parse(guest) if before[0].at <= r.at <= after[-1].at]
    gaps = sorted(b.at - a.at for a, b in itertools.pairwise(window))
    gap, usual = gaps[-1], gaps[len(gaps) // 2]
    longest = max(r.longest_ms for r in window) / 1000
    name = signal.Signals(sig).name
    print(f"\nrestart ({name}{f', start after {pause:g} s' if pause else ''}): new process serving "
          f"{stall:.2f} s after the signal; longest gap between reader lines {gap:.2f} s (usual {usual:.2f} s), "
          f"longest single read {longest:.2f} s; reader rounds {before[-1].number} -> {after[-1].number}, "
          f"{(after[-1].bytes - before[-1].bytes) / 1e6:.0f} MB read since; guest errors: 0")
    return mark, connected[0]


def test_the_client_reads_on_through_a_sigterm_restart(client):
    lab, guest = client
    mark, address = restart_under_reading(lab, guest, signal.SIGTERM, pause=0.0)
    for text in ("NBD left 1 connections to the next start", "NBD kept its listening socket across the restart",
                 "NBD resumed 1 connections kept across the restart",
                 f"resumed on export '{lab.image_name}' after a restart (first served as {address})"):
        assert logged(lab, mark, text), f"{text!r} not in the log:\n{lab.daemon.log()}"


def test_the_client_reads_on_through_a_kill9_and_start(client):
    lab, guest = client
    mark, address = restart_under_reading(lab, guest, signal.SIGKILL, pause=0.1)
    for text in ("NBD kept its listening socket across the restart", "NBD resumed 1 connections kept across the restart",
                 f"resumed on export '{lab.image_name}' after a restart (first served as {address})"):
        assert logged(lab, mark, text), f"{text!r} not in the log:\n{lab.daemon.log()}"
    assert not any("NBD left" in line for line in lab.daemon.log().splitlines()[mark:])   # no handover: a crash
