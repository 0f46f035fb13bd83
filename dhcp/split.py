"""Split scope for two boot servers (docs/reliability.md, "Two boot servers"). Pure.

Both servers read the same file: `pair.servers` names their own addresses in one order,
`dhcp.split` the percentage of every pool that the first one offers from. Each server cuts
every pool the same way, so the two shares never overlap and nothing has to be exchanged:
the first server offers from the first `split`% of a pool's addresses (in address order,
over all its ranges), the second from the rest. Reservations (devices' fixed IPs) are
outside the split: both answer them identically.

What each server still accepts outside its share is the machine's business (dhcp.machine):
a RENEWING/REBINDING client holding an address of the peer's share is ACKed when the
address is free in this server's own table (the peer may be dead), so a client of a dead
server keeps its address; an INIT-REBOOT for the peer's share is left to the peer.
"""

from __future__ import annotations

import math
from ipaddress import IPv4Address
from typing import Iterable

Ranges = tuple[tuple[IPv4Address, IPv4Address], ...]


def first_count(size: int, percent: float) -> int:
    """How many of a pool's `size` addresses the first server offers from (rounded half up;
    both servers compute the same number)."""
    return min(size, max(0, math.floor(size * percent / 100 + 0.5)))


def share(pool: Ranges, percent: float, first: bool) -> Ranges:
    """The ranges of `pool` that the first (`first`) or the second server offers from."""
    sizes = [int(hi) - int(lo) + 1 for lo, hi in pool]
    cut = first_count(sum(sizes), percent)
    out: list[tuple[IPv4Address, IPv4Address]] = []
    seen = 0
    for (lo, hi), size in zip(pool, sizes):
        start, end = seen, seen + size          # this range covers [start, end) of the pool
        seen = end
        lo_i, hi_i = (start, min(end, cut)) if first else (max(start, cut), end)
        if lo_i < hi_i:
            out.append((IPv4Address(int(lo) + lo_i - start), IPv4Address(int(lo) + hi_i - 1 - start)))
    return tuple(out)


def in_ranges(ip: IPv4Address, ranges: Ranges) -> bool:
    return any(lo <= ip <= hi for lo, hi in ranges)


def identify(servers: tuple[IPv4Address, ...], local: Iterable[IPv4Address]) -> tuple[int | None, str]:
    """Which of `servers` this machine is: (index, "") when exactly one of them is among its
    `local` addresses, else (None, why) for the configuration error."""
    mine = [i for i, address in enumerate(servers) if address in set(local)]
    if len(mine) == 1:
        return mine[0], ""
    listed = " and ".join(str(a) for a in servers)
    if not mine:
        return None, (f"neither {listed} is an address of this machine: list each server's "
                      f"own address (not server.address), or set pair.this_server")
    return None, f"both {listed} are addresses of this machine: set pair.this_server"
