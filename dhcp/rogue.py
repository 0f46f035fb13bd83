"""Rogue DHCP servers: who else answers clients on a served LAN. Pure: bytes and `now` in,
decisions out (dhcp/watch.py does the socket work).

A second DHCP server on a school LAN (a pupil's home router plugged in backwards) is the
classic outage. Every server reply seen on a served interface (UDP 67 → 68) is shown to the
`Detector`: ours (our addresses, our link's MAC, our server id — relayed replies too) and the
configured known servers (a split-scope partner, proxy mode's school server) are expected;
any other server is a rogue. The detector keeps a bounded table of rogues and says when one
is new, so the adapter logs one line per server, not one per packet.

On a switched LAN a rogue's OFFER unicast to a client never reaches us, so the adapter also
broadcasts a DISCOVER now and then (`probe_discover`) from a fixed locally administered MAC
derived from the server (`probe_mac`): a fixed MAC makes a rogue offer the same address each
time instead of spending its pool, and our own machine is told never to answer it.
"""

from __future__ import annotations

import hashlib
import struct
from collections import OrderedDict
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Collection

from dhcp import options as O
from dhcp.codec import (BOOTREPLY, BOOTREQUEST, BROADCAST_FLAG, ZERO, Message, ProtocolError,
                        decode, encode)

MAX_SERVERS = 64          # rogues remembered; the least recently seen goes first
SILENCE = 3600.0          # a rogue quiet this long is logged again when it comes back
REPLY_KINDS = {O.OFFER: "offer", O.ACK: "ack", O.NAK: "nak"}
SERVER_PORT, CLIENT_PORT = 67, 68
UDP = 17


def udp_payload(packet: bytes) -> tuple[IPv4Address, bytes] | None:
    """(source address, UDP payload) of an IPv4 datagram from port 67 to port 68, else None.
    The kernel filter passes only these; checked again here because a packet socket can
    queue frames before its filter is attached, and to stay within the buffer."""
    if len(packet) < 20 or packet[0] >> 4 != 4:
        return None
    ihl = (packet[0] & 0x0F) * 4
    total, frag, proto = struct.unpack_from("!H2xHxB", packet, 2)
    if proto != UDP or frag & 0x3FFF or ihl < 20 or len(packet) < ihl + 8:
        return None           # a fragment (MF set or an offset) is not a whole reply
    sport, dport, length = struct.unpack_from("!HHH", packet, ihl)
    end = min(len(packet), total, ihl + length)
    if (sport, dport) != (SERVER_PORT, CLIENT_PORT) or end < ihl + 8:
        return None
    return IPv4Address(packet[12:16]), packet[ihl + 8:end]


def probe_mac(server: IPv4Address) -> bytes:
    """The probe's client MAC: locally administered (0x02), unicast, stable for a server
    (so a rogue re-offers the same address), different between servers."""
    digest = hashlib.sha256(b"bootserverd rogue probe " + server.packed).digest()
    return b"\x02" + digest[:5]


def probe_discover(mac: bytes, xid: int) -> bytes:
    """The probe: a plain DISCOVER with the broadcast flag, so servers broadcast the OFFER and
    our packet socket sees it on a switched LAN. Never followed by a REQUEST."""
    return encode(Message(op=BOOTREQUEST, xid=xid & 0xFFFFFFFF, chaddr=mac, flags=BROADCAST_FLAG,
                          options=((O.MESSAGE_TYPE, O.u8(O.DISCOVER)),
                                   (O.PARAM_REQUEST, bytes((1, 3, 6, 54, 66, 67))))))


@dataclass(frozen=True)
class Sighting:
    """One decoded datagram from port 67 to 68, and where it was seen."""
    interface: str
    src_ip: IPv4Address
    src_mac: bytes            # Ethernet source (the packet socket's sll_addr)
    message: Message


def sighting(interface: str, packet: bytes, src_mac: bytes) -> Sighting | None:
    """What a packet socket read (the IP datagram) as a Sighting; None unless it is a whole
    datagram from port 67 to 68 that decodes (a malformed one names no server)."""
    found = udp_payload(packet)
    if found is None:
        return None
    try:
        return Sighting(interface, found[0], src_mac, decode(found[1]))
    except ProtocolError:
        return None


@dataclass
class Rogue:
    server_ip: IPv4Address    # option 54, else the IP source
    server_mac: str
    interface: str
    first_seen: float
    last_seen: float
    offers: int = 0
    acks: int = 0
    naks: int = 0
    last_offered: IPv4Address | None = None
    last_client: str = ""
    boot_file: str = ""

    def as_dict(self) -> dict:
        """The /status form (DHCPService.rogue_servers)."""
        return {"server_ip": str(self.server_ip), "server_mac": self.server_mac,
                "interface": self.interface, "first_seen": round(self.first_seen, 3),
                "last_seen": round(self.last_seen, 3), "offers": self.offers, "acks": self.acks,
                "naks": self.naks,
                "last_offered": str(self.last_offered) if self.last_offered else None,
                "last_client": self.last_client, "boot_file": self.boot_file}


@dataclass(frozen=True)
class Verdict:
    kind: str                        # ours | known | rogue | ignored (not a server reply)
    rogue: Rogue | None = None
    reply: str = ""                  # offer | ack | nak
    offered: IPv4Address | None = None   # this reply's yiaddr (None: no address in it)
    new: bool = False                # first sight, or back after SILENCE: log one line
    silent_for: float = 0.0          # when back: how long it was quiet
    crowded: bool = False            # a recently active rogue was evicted (a spoofing flood)


class Detector:
    """The table of rogue servers. `known`: addresses of the servers that are expected."""

    def __init__(self, known: Collection[IPv4Address] = (), max_servers: int = MAX_SERVERS,
                 silence: float = SILENCE):
        self.known = frozenset(known)
        self.max_servers = max_servers
        self.silence = silence
        self.table: OrderedDict[tuple[IPv4Address, str], Rogue] = OrderedDict()  # by last_seen
        self.replies = {kind: 0 for kind in REPLY_KINDS.values()}   # rogue replies, ever

    def observe(self, seen: Sighting, now: float, our_ips: Collection[IPv4Address],
                our_mac: bytes | None = None) -> Verdict:
        """Classify one sighting; `our_ips`: the served interfaces' addresses and the server
        address; `our_mac`: the MAC of the interface it was seen on."""
        msg = seen.message
        kind = REPLY_KINDS.get(msg.msg_type) if msg.op == BOOTREPLY else None
        if kind is None:
            return Verdict("ignored")
        server = O.to_ip(msg.get(O.SERVER_ID)) or seen.src_ip
        if seen.src_mac == our_mac or seen.src_ip in our_ips or server in our_ips:
            return Verdict("ours", reply=kind)
        if seen.src_ip in self.known or server in self.known:
            return Verdict("known", reply=kind)
        return self._count(seen, server, kind, now)

    def _count(self, seen: Sighting, server: IPv4Address, kind: str, now: float) -> Verdict:
        key = (server, seen.src_mac.hex(":"))
        rogue = self.table.get(key)
        crowded, silent_for = False, 0.0
        if rogue is None:
            if len(self.table) >= self.max_servers:
                _, oldest = self.table.popitem(last=False)
                crowded = now - oldest.last_seen < self.silence
            rogue = self.table[key] = Rogue(server, key[1], seen.interface, now, now)
            new = True
        else:
            silent_for = now - rogue.last_seen
            new = silent_for >= self.silence
            self.table.move_to_end(key)
        msg = seen.message
        rogue.last_seen, rogue.interface = now, seen.interface
        setattr(rogue, kind + "s", getattr(rogue, kind + "s") + 1)
        self.replies[kind] += 1
        offered = msg.yiaddr if kind != "nak" and msg.yiaddr != ZERO else None
        rogue.last_offered = offered or rogue.last_offered
        rogue.last_client = msg.mac
        # the sender chooses these bytes: printable and bounded before a log line shows them
        rogue.boot_file = _printable(O.to_text(msg.get(O.BOOTFILE)) or
                                     msg.file.decode("utf-8", "replace"))
        return Verdict("rogue", rogue, kind, offered, new, silent_for if new else 0.0, crowded)

    def active(self, now: float) -> int:
        """Rogues heard within SILENCE (the bootserverd_dhcp_rogue_servers gauge)."""
        return sum(1 for r in self.table.values() if now - r.last_seen < self.silence)

    def rogues(self) -> list[Rogue]:
        """Most recently seen first."""
        return list(reversed(self.table.values()))


def describe(verdict: Verdict, probe: bytes | None = None) -> str:
    """The one log line for a new rogue, e.g. `rogue DHCP server 10.0.0.9 (02:..) on br0
    offered 10.0.0.150 to 52:54:00:12:34:56 (boot file "x")`."""
    r = verdict.rogue
    assert r is not None
    address = verdict.offered
    did = {"offer": f"offered {address}" if address else "made an offer without an address "
                                                          "(proxyDHCP)",
           "ack": f"acknowledged {address}" if address else "acknowledged (no address)",
           "nak": "refused a request (NAK)"}[verdict.reply]
    client = r.last_client + (" (our probe)" if probe and r.last_client == probe.hex(":") else "")
    boot = f'boot file "{r.boot_file}"' if r.boot_file else "no boot file"
    silent = verdict.silent_for
    back = f"; back after {silent / 60:.0f} min of silence" if silent else ""
    return f"rogue DHCP server {r.server_ip} ({r.server_mac}) on {r.interface} {did} to {client} " \
           f"({boot}){back}"


def _printable(text: str, limit: int = 128) -> str:
    return "".join(c if c.isprintable() else "?" for c in text[:limit])
