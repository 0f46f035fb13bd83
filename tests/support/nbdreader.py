"""A libnbd reader with several reads in flight, run apart from the tests' process (see PIPELINED)."""

from __future__ import annotations

import subprocess
import threading
import time

from tests.support.nbd import PEER_CWD, peer_env

# Debian's libnbd binding, run apart: its Buffer type is looked up as the module "nbd", which in
# this process is ours. Reads with several in flight through a small receive buffer (the server
# is mostly in the middle of a reply, as with a client slower than the server), checks bytes,
# and gives up on a read that waits 15 s (one the dead process took and nobody answered would
# wait forever).
PIPELINED = """
import random, socket, sys, time, urllib.parse, nbd
uri, path, depth, size, rcvbuf = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = open(path, "rb").read()
u = urllib.parse.urlsplit(uri)
sock = socket.socket()
if rcvbuf:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)   # replies wait in the server's socket
sock.connect((u.hostname, u.port))
h = nbd.NBD()
h.set_export_name(u.path[1:])
h.connect_socket(sock.detach())
rng, inflight, reads, longest = random.Random(11), {}, 0, 0.0
deadline = time.monotonic() + 180
try:
    while time.monotonic() < deadline:
        while len(inflight) < depth:
            offset = rng.randrange(len(data) - size)
            buf = nbd.Buffer(size)
            inflight[h.aio_pread(buf, offset)] = (buf, offset, time.monotonic())
        h.poll(100)
        now = time.monotonic()
        for cookie, (buf, offset, began) in list(inflight.items()):
            if h.aio_command_completed(cookie):
                del inflight[cookie]
                if buf.to_bytearray() != data[offset:offset + size]:
                    sys.exit(print("WRONG bytes at", offset, flush=True))
                reads += 1
                longest = max(longest, now - began)
                print("READ", reads, round(longest, 3), flush=True)
            elif now - began > 15:
                sys.exit(print("STUCK a read at", offset, "unanswered for 15 s", flush=True))
except Exception as e:
    sys.exit(print("ERROR", e, flush=True))
"""


class PipelinedReader(threading.Thread):
    """Follows the reader's lines: the reads done, the longest wait, or how it failed."""

    def __init__(self, uri: str, image: str, depth: int = 8, size: int = 1 << 20, prefix: tuple = (),
                 rcvbuf: int = 16384):
        """``prefix``: a command to run the reader under (nsenter into a namespace); ``rcvbuf``:
        its socket's receive buffer (small: the server is mostly mid-reply; 0: the kernel's)."""
        super().__init__(daemon=True)
        self.proc = subprocess.Popen([*prefix, "/usr/bin/python3", "-c", PIPELINED, uri, image, str(depth), str(size), str(rcvbuf)],
                                     cwd=PEER_CWD, env=peer_env(), stdout=subprocess.PIPE, text=True)
        self.reads, self.longest, self.error = 0, 0.0, None

    def run(self):
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "READ":
                if len(rest.split()) == 2:         # not a line cut short by close()
                    reads, longest = rest.split()
                    self.reads, self.longest = int(reads), float(longest)
            else:
                self.error = line.strip()

    def reads_after(self, count: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        target = self.reads + count
        while self.reads < target and time.monotonic() < deadline and self.error is None:
            time.sleep(0.01)
        return self.reads >= target

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.join(10)
