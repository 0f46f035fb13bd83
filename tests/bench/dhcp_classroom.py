"""A school's 8:00 behind a relay, as DHCP sees it: N PCs each make the three conversations a
netboot makes — the firmware's PXE (option 60 PXEClient), iPXE's (user class iPXE) and the
initramfs's ipconfig — all N firmware DISCOVERs at once, each next conversation 0.5–3 s after
the previous ACK. Run in the relay's namespace by tests/bench/dhcp_classroom_bench.py:

  python tests/bench/dhcp_classroom.py RELAY_IP SERVER_IP COUNT OUT.json

We are the relay (giaddr = RELAY_IP, unicast to the server's port 67 from our port 67). A
conversation without its OFFER or ACK re-sends after 1, 2, 4, 8 s (a PXE ROM's schedule) and
fails after that; bounded: 90 s in all. OUT.json: per conversation the MAC, the address, the
OFFER latency from the first DISCOVER, the retransmissions, and the addresses by server.
"""

from __future__ import annotations

import json
import random
import select
import socket
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dhcp import options as O  # noqa: E402
from dhcp.codec import Message, ProtocolError, decode, encode  # noqa: E402

STAGES = ("firmware", "ipxe", "initramfs")
BACKOFF = (1.0, 2.0, 4.0, 8.0)


def stage_options(stage: str) -> tuple:
    if stage == "firmware":
        return ((O.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"), (93, b"\x00\x00"))
    if stage == "ipxe":
        return ((O.VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001"), (77, b"iPXE"), (93, b"\x00\x00"))
    return ()


class Conversation:
    def __init__(self, mac: bytes, stage: str, relay: IPv4Address):
        self.mac, self.stage, self.relay = mac, stage, relay
        self.xid = random.getrandbits(32)
        self.phase = "discover"
        self.began = self.sent = 0.0
        self.tries = 0
        self.offer_latency: float | None = None
        self.address: str | None = None
        self.server: bytes | None = None
        self.done = self.failed = False
        self.retransmits = 0

    def packet(self) -> bytes:
        opts = [(O.MESSAGE_TYPE, O.u8(O.DISCOVER if self.phase == "discover" else O.REQUEST))]
        if self.phase == "request":
            opts += [(O.SERVER_ID, self.server), (O.REQUESTED_IP, IPv4Address(self.address).packed)]
        opts += list(stage_options(self.stage))
        return encode(Message(op=1, xid=self.xid, chaddr=self.mac, hops=1, giaddr=self.relay,
                              options=tuple(opts)))


def main(relay_ip: str, server_ip: str, count: int, out_path: str) -> None:
    relay = IPv4Address(relay_ip)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((relay_ip, 67))
    sock.setblocking(False)
    server = (server_ip, 67)
    macs = [bytes([0x02, 0x5c, 0, 0, i >> 8 & 255, i & 255]) for i in range(1, count + 1)]
    by_xid: dict[int, Conversation] = {}
    done: list[Conversation] = []
    next_start: list[tuple[float, bytes, int]] = []       # (when, mac, stage index)

    def start(mac: bytes, stage: int, now: float) -> None:
        conv = Conversation(mac, STAGES[stage], relay)
        conv.began = conv.sent = now
        by_xid[conv.xid] = conv
        sock.sendto(conv.packet(), server)

    began = time.monotonic()
    for mac in macs:                                       # the room switched on at once
        start(mac, 0, time.monotonic())
    deadline = began + 90
    while (by_xid or next_start) and time.monotonic() < deadline:
        now = time.monotonic()
        for item in [s for s in next_start if s[0] <= now]:
            next_start.remove(item)
            start(item[1], item[2], now)
        for conv in list(by_xid.values()):
            if now - conv.sent >= BACKOFF[min(conv.tries, len(BACKOFF) - 1)]:
                if conv.tries >= len(BACKOFF):
                    conv.failed = True
                    del by_xid[conv.xid]
                    done.append(conv)
                    continue
                conv.tries += 1
                conv.retransmits += 1
                conv.sent = now
                sock.sendto(conv.packet(), server)
        ready, _, _ = select.select([sock], [], [], 0.02)
        if not ready:
            continue
        while True:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            try:
                reply = decode(data)
            except ProtocolError:
                continue
            conv = by_xid.get(reply.xid)
            if conv is None:
                continue
            now = time.monotonic()
            kind = reply.msg_type
            if kind == O.OFFER and conv.phase == "discover":
                conv.offer_latency = now - conv.began
                conv.address, conv.server = str(reply.yiaddr), reply.get(O.SERVER_ID)
                conv.phase, conv.sent, conv.tries = "request", now, 0
                sock.sendto(conv.packet(), server)
            elif kind == O.ACK and conv.phase == "request":
                conv.done = True
                conv.address = str(reply.yiaddr)
                del by_xid[conv.xid]
                done.append(conv)
                stage = STAGES.index(conv.stage)
                if stage + 1 < len(STAGES):
                    next_start.append((now + random.uniform(0.5, 3.0), conv.mac, stage + 1))
            elif kind == O.NAK:
                conv.phase, conv.sent, conv.tries = "discover", now, 0
                sock.sendto(conv.packet(), server)
    for conv in by_xid.values():
        conv.failed = True
        done.append(conv)
    record = [{"mac": c.mac.hex(), "stage": c.stage, "ok": c.done, "address": c.address,
               "offer_latency": c.offer_latency, "retransmits": c.retransmits} for c in done]
    Path(out_path).write_text(json.dumps({"seconds": time.monotonic() - began, "conversations": record}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
