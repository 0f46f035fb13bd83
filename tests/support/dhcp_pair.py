"""Scripted broadcast DHCP clients for the two-server (split scope) test, run inside the
client namespace:

  python -m tests.support.dhcp_pair IFACE COUNT OUT.json

Phase 1: COUNT clients (distinct MACs) DISCOVER on IFACE, REQUEST the first offer and count
as bound on its ACK; a client without an ACK 1 s after its last packet starts over (a server
killed meanwhile). Every OFFER and ACK is recorded with the server that sent it. Progress
goes to stdout ("bound N"), then "bound-all", and the driver waits for a line on stdin.
Phase 2: every client goes to REBINDING (T2 passed without its server: a broadcast REQUEST
with ciaddr, no server identifier); its addresses are added to IFACE so unicast ACKs arrive.
Everything is bounded: 40 s for phase 1, 20 s for phase 2. The record goes to OUT.json."""

from __future__ import annotations

import json
import random
import select
import socket
import subprocess
import sys
import time
from ipaddress import IPv4Address

from dhcp import options as O
from dhcp.codec import BROADCAST_FLAG, Message, ProtocolError, decode, encode

WAVE, WAVE_GAP, RETRY = 20, 0.15, 1.0


def _mac(i: int) -> str:
    return f"02:5a:00:00:{i >> 8 & 255:02x}:{i & 255:02x}"


def _send(sock, mac: str, xid: int, kind: int, opts=(), ciaddr=None, flags=BROADCAST_FLAG):
    m = Message(op=1, xid=xid, chaddr=bytes.fromhex(mac.replace(":", "")), flags=flags,
                ciaddr=ciaddr or IPv4Address(0), options=((O.MESSAGE_TYPE, O.u8(kind)),) + tuple(opts))
    sock.sendto(encode(m), ("255.255.255.255", 67))


def _replies(sock, until: float):
    while True:
        left = until - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return
        try:
            r = decode(sock.recv(4096))
        except ProtocolError:                  # not a DHCP message: not ours
            continue
        if r.op == 2:
            yield r


def across_a_kill(driver: subprocess.Popen, kill, at: int = 80) -> tuple[list[str], int | None]:
    """Follow a running driver (stdin and stdout pipes): ``kill()`` once ``at`` clients are
    bound, then, phase 1 over, start phase 2 and wait for it. Returns phase 1's lines and how
    many were bound at the kill (None: never)."""
    lines, killed_at = [], None
    try:
        for line in driver.stdout:            # bounded: the driver gives up after 40 s
            lines.append(line.strip())
            if line.startswith("bound ") and int(line.split()[1]) >= at and killed_at is None:
                kill()
                killed_at = int(line.split()[1])
            if line.startswith(("bound-all", "bound-only")):
                break
        driver.stdin.write("rebind\n")
        driver.stdin.flush()
        lines.append(driver.stdout.readline().strip())     # "done"
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    return lines, killed_at


def main(ifname: str, count: int, out_path: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("0.0.0.0", 68))
    macs = [_mac(i) for i in range(1, count + 1)]
    xid_of: dict[int, str] = {}
    state: dict[str, dict] = {m: {"phase": "idle", "sent": 0.0} for m in macs}
    offers: list[list] = []         # [server id, offered address, mac]
    acks: list[list] = []           # [server id, address, mac] (phase 1)
    bound: dict[str, dict] = {}
    waiting = list(macs)

    def discover(mac):
        xid = random.getrandbits(32)
        xid_of[xid] = mac
        state[mac] = {"phase": "discover", "xid": xid, "sent": time.monotonic()}
        _send(sock, mac, xid, O.DISCOVER)

    deadline = time.monotonic() + 40
    next_wave, reported = 0.0, 0
    while len(bound) < count and time.monotonic() < deadline:
        now = time.monotonic()
        if waiting and now >= next_wave:
            for mac in waiting[:WAVE]:
                discover(mac)
            waiting = waiting[WAVE:]
            next_wave = now + WAVE_GAP
        for mac, st in state.items():       # no answer: start over (its server may be gone)
            if mac not in bound and st["phase"] != "idle" and now - st["sent"] > RETRY:
                discover(mac)
        for r in _replies(sock, min(next_wave, time.monotonic() + 0.05)):
            mac = xid_of.get(r.xid)
            if mac is None or mac in bound:
                continue
            st, sid = state[mac], str(IPv4Address(r.get(O.SERVER_ID) or bytes(4)))
            if r.msg_type == O.OFFER:
                offers.append([sid, str(r.yiaddr), mac])
                if st["phase"] == "discover" and st["xid"] == r.xid:
                    st.update(phase="request", sent=time.monotonic())
                    _send(sock, mac, r.xid, O.REQUEST, ((O.SERVER_ID, r.get(O.SERVER_ID)),
                                                       (O.REQUESTED_IP, r.yiaddr.packed)))
            elif r.msg_type == O.ACK and st["phase"] == "request" and st["xid"] == r.xid:
                acks.append([sid, str(r.yiaddr), mac])
                bound[mac] = {"ip": str(r.yiaddr), "server": sid}
            elif r.msg_type == O.NAK and st["xid"] == r.xid:
                discover(mac)
        if len(bound) >= reported + 10:
            reported = len(bound) - len(bound) % 10
            print(f"bound {reported}", flush=True)
    print("bound-all" if len(bound) == count else f"bound-only {len(bound)}", flush=True)
    sys.stdin.readline()                                   # the test kills a server meanwhile

    # Phase 2: REBINDING, from the addresses the clients hold
    batch = "".join(f"address add {b['ip']}/32 dev {ifname}\n" for b in bound.values())
    subprocess.run(["ip", "-batch", "-"], input=batch, text=True, check=True)
    rebound: dict[str, dict] = {}
    naks: list[list] = []
    xids = {}
    for mac in bound:
        xids[random.getrandbits(32)] = mac
    sent: dict[str, float] = {}
    deadline = time.monotonic() + 20
    pending = list(xids.items())
    while len(rebound) < len(bound) and time.monotonic() < deadline:
        now = time.monotonic()
        for xid, mac in pending:
            if mac not in rebound and now - sent.get(mac, -9.0) > RETRY:
                sent[mac] = now
                _send(sock, mac, xid, O.REQUEST, ciaddr=IPv4Address(bound[mac]["ip"]), flags=0)
        for r in _replies(sock, time.monotonic() + 0.1):
            mac = xids.get(r.xid)
            if mac is None or mac in rebound:
                continue
            sid = str(IPv4Address(r.get(O.SERVER_ID) or bytes(4)))
            if r.msg_type == O.ACK:
                rebound[mac] = {"ip": str(r.yiaddr), "server": sid}
            elif r.msg_type == O.NAK:
                naks.append([sid, bound[mac]["ip"], mac])
    with open(out_path, "w") as f:
        json.dump({"offers": offers, "acks": acks, "bound": bound, "rebound": rebound,
                   "naks": naks}, f)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
