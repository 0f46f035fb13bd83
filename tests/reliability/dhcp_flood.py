"""Runs inside a client namespace: a pupil's packet tool sending DHCPDISCOVERs from random
MACs as fast as it can (bounded in count and time), counting the OFFERs it gets back.

    python dhcp_flood.py IFACE COUNT SECONDS   → prints one JSON line
"""

from __future__ import annotations

import json
import os
import random
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dhcp import options as O  # noqa: E402
from dhcp.codec import BROADCAST_FLAG, Message, ProtocolError, decode, encode  # noqa: E402


def main(ifname: str, count: int, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind(("0.0.0.0", 68))
    sock.setblocking(False)
    rng = random.Random(os.getpid())
    xids = set()
    offers, addresses = 0, set()
    started = time.monotonic()
    sent = 0

    def collect():
        nonlocal offers
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                return
            try:
                reply = decode(data)
            except ProtocolError:
                continue
            if reply.xid in xids and reply.msg_type == O.OFFER:
                offers += 1
                addresses.add(str(reply.yiaddr))

    while sent < count and time.monotonic() - started < seconds:
        xid = rng.getrandbits(32)
        xids.add(xid)
        mac = bytes([0x02]) + rng.randbytes(5)
        msg = Message(xid=xid, chaddr=mac, flags=BROADCAST_FLAG,
                      options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),))
        try:
            sock.sendto(encode(msg), ("255.255.255.255", 67))
            sent += 1
        except BlockingIOError:
            time.sleep(0.001)
        if sent % 64 == 0:
            collect()
    send_seconds = time.monotonic() - started
    end = time.monotonic() + 2.0
    while time.monotonic() < end:
        collect()
        time.sleep(0.05)
    print(json.dumps({"sent": sent, "seconds": round(send_seconds, 2), "offers": offers,
                      "distinct_addresses": len(addresses)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
