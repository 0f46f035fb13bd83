"""A thin client runs on when its server dies and comes back (#16 part 2, the real guest).

The real Debian image boots to multi-user in the lab, its root on NBD (Debian 12's nbd-client in
Debian's initramfs), bootserverd-client's ``bootserverd-nbd-reconnect`` resident (the kernel
holds I/O without a connection; the helper reconnects), and the image's reader unit on
(``bootserverd.e2e_reader=1``: caches dropped, files of the squashfs root read without end, a
line on the console about twice a second). The server is killed with SIGKILL while the guest
reads — not supervised, no fd store: nothing survives, the client's connection is reset — and
started again 10 s later. The guest must read on without one error, none from the reader and
none from its kernel; the stall is printed.

- ``test_the_client_reads_on_after_bootserverd_is_killed_and_back_10_s_later``: bootserverd.
- ``test_the_client_reads_on_after_nbd_server_is_killed_and_back_10_s_later`` (``slow``, for
  docs/reliability.md): the same guest image against the reference chain (dnsmasq + nbd-server,
  tests/bench/boot_bench.py ReferenceLab), the nbd-server daemon and its per-client child killed.

Each test boots its own guest (~2 min of TCG) and holds /tmp/bootserverd-bench.lock meanwhile.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import sys
import time

import pytest

from tests.e2e.debian_image import FAILURES, MARKER, READER, debian_image
from tests.e2e import reader
from tests.e2e.harness import KERNEL_ARGS, REPO, BootLab, NsDaemon, Qemu
from tests.e2e.reader import Round, parse

sys.path.insert(0, str(REPO / "tests" / "bench"))
from boot_bench import ReferenceLab  # noqa: E402  (tests/bench/boot_bench.py)

OUTAGE = 10.0                # s between the kill and the new start
ROUNDS_AFTER = 10            # reader rounds (~0.5 s each) that must follow the return
READER_ARGS = f"{KERNEL_ARGS} bootserverd.e2e_reader=1"
HELPER = "bootserverd-nbd-reconnect"
# what the guest's console must never show: the reader's failures, the kernel's I/O errors, the
# helper's failures. "Dead connection", "Receive control failed" and "Connection timed out,
# retrying" are expected: the kernel says the connection died and it holds the I/O.
ERRORS = (f"{READER} error", "I/O error", "Input/output error", "SQUASHFS error", "Kernel panic",
          "shutting down sockets")
HELPER_ERRORS = ("fatal:", "gave up", "refused the new socket", "cannot keep")      # in the helper's lines
RECONNECTED = re.compile(rf"{HELPER}\[\d+\]: /dev/nbd0: reconnected to \S+ after ([\d.]+) s \((\d+) attempts\)")


@pytest.fixture(scope="module")
def image():
    return debian_image()


def errors(guest: Qemu) -> list[str]:
    found = []
    for _, line in list(guest.stamped):
        if any(e in line for e in ERRORS) or (HELPER in line and any(e in line for e in HELPER_ERRORS)):
            found.append(line)
    return found


def rounds(guest: Qemu, since: float, count: int, timeout: float) -> list[Round]:
    return reader.rounds(guest, since, count, timeout, errors)


def console(guest: Qemu, pattern: str, since: float = 0.0, timeout: float = 0.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        found = [line for at, line in list(guest.stamped) if at > since and pattern in line]
        if found or time.monotonic() >= deadline:
            return found
        time.sleep(0.2)


def explain(guest: Qemu, server_log: str = "") -> str:
    return ("guest console (last 80 lines):\n" + "\n".join(line for _, line in guest.stamped[-80:]) +
            ("\n\nserver log (last 40 lines):\n" + "\n".join(server_log.splitlines()[-40:]) if server_log else ""))


def boot_reading(lab: BootLab) -> Qemu:
    guest = Qemu(lab.qemu_argv(firmware="bios", memory=1024))
    lab.guests.append(guest)
    found, _ = guest.wait_for((MARKER, *FAILURES), timeout=400)
    assert found == MARKER, explain(guest)
    assert len(rounds(guest, since=0.0, count=3, timeout=180)) >= 3, explain(guest)
    # the helper set the dead-connection timeout, locked itself in memory and waits (it starts
    # before sysinit.target)
    assert console(guest, "reconnecting when it dies") and console(guest, "locked in memory"), explain(guest)
    assert not errors(guest), explain(guest)
    return guest


def through_outage(guest: Qemu, kill, start, server_log) -> str:
    """Kill the server under the reading guest, start it OUTAGE s later; check the guest read on
    without an error; returns the line that reports the stall."""
    before = rounds(guest, since=time.monotonic(), count=2, timeout=30)   # reading right now
    assert len(before) == 2, explain(guest, server_log())
    killed = time.monotonic()
    kill()
    time.sleep(OUTAGE)
    started = time.monotonic()
    start()
    serving = time.monotonic() - killed
    after = rounds(guest, since=started, count=ROUNDS_AFTER, timeout=180)
    assert not errors(guest), "\n".join(errors(guest)) + "\n\n" + explain(guest, server_log())
    assert len(after) >= ROUNDS_AFTER, explain(guest, server_log())
    assert after[0].number > before[-1].number and after[-1].bytes > before[-1].bytes
    reconnected = console(guest, "reconnected to", since=killed, timeout=5)
    m = next((m for line in reconnected if (m := RECONNECTED.search(line))), None)
    assert m, explain(guest, server_log())
    window = [r for r in parse(guest) if before[0].at <= r.at <= after[-1].at]
    gaps = sorted(b.at - a.at for a, b in itertools.pairwise(window))
    gap, usual = gaps[-1], gaps[len(gaps) // 2]
    resumed = next(r.at for r in window if r.at > killed and r.number > before[-1].number + 1) - killed
    locked = re.search(r"locked in memory \((\d+) MB\)", console(guest, "locked in memory")[0])
    return (f"killed, started again {OUTAGE:g} s later (serving {serving:.1f} s after the kill): the helper "
            f"reconnected {float(m[1]):.1f} s after the loss ({m[2]} attempts); reading resumed {resumed:.1f} s after "
            f"the kill; longest gap between reader lines {gap:.1f} s (usual {usual:.2f} s); reader rounds "
            f"{before[-1].number} -> {after[-1].number}, {(after[-1].bytes - before[-1].bytes) / 1e6:.0f} MB read "
            f"since; guest errors: 0; the helper holds {locked[1]} MB locked")


def test_the_client_reads_on_after_bootserverd_is_killed_and_back_10_s_later(tmp_path, image, machine_lock):
    with BootLab(tmp_path, image.path, image.name, boot={"kernel_args": READER_ARGS}) as lab:
        guest = boot_reading(lab)
        assert len(re.findall(r"NBD (10\.47\.0\.\d+:\d+) connected to export", lab.daemon.log())) == 1

        def kill():
            lab.daemon.proc.send_signal(signal.SIGKILL)        # `ip netns exec` exec'd: the daemon's PID
            lab.daemon.proc.wait(10)

        def start():
            lab.daemon = NsDaemon(lab.server, lab.config)
            lab.daemon.wait_for("bootserverd started", timeout=30)

        line = through_outage(guest, kill, start, lambda: lab.daemon.log())
        # the new daemon serves the guest a new connection on the same export
        assert re.search(rf"NBD 10\.47\.0\.\d+:\d+ connected to export '?{re.escape(image.name)}", lab.daemon.log()), \
            lab.daemon.log()
        print(f"\nbootserverd {line}")


class ReadingReferenceLab(ReferenceLab):
    """The reference chain, its kernel line with the image's reader on."""

    def _serve(self) -> None:
        super()._serve()
        path = self.tmp / "tftp" / "boot.ipxe"
        text = path.read_text()
        assert KERNEL_ARGS in text, text
        path.write_text(text.replace(KERNEL_ARGS, READER_ARGS))


@pytest.mark.slow
def test_the_client_reads_on_after_nbd_server_is_killed_and_back_10_s_later(tmp_path, image, machine_lock):
    with ReadingReferenceLab(tmp_path, image.path, image.name, path="ipxe") as lab:
        guest = boot_reading(lab)
        conf = lab.tmp / "nbd-server.conf"

        def kill():
            for pid in lab._nbd_server_pids():        # the daemon and its child serving the guest
                os.kill(pid, signal.SIGKILL)

        def start():
            lab.server.run(["nbd-server", "-C", str(conf), "-p", str(lab.pidfile)], timeout=10, check=True)

        line = through_outage(guest, kill, start, lambda: "")
        print(f"\nnbd-server {line}")

