"""The in-memory lease table and address allocation. Pure: time is always passed in as `now`.

A lease row exists for every address ever offered, bound, released or declined; rows are
kept after expiry so a returning client gets its old address back (stickiness). An address
is free for a client when it has no row, its row is that client's, or the row has expired.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Network
from typing import Callable, Iterable

OFFERED, BOUND, RELEASED, DECLINED = "offered", "bound", "released", "declined"


@dataclass(frozen=True)
class Lease:
    ip: IPv4Address
    key: bytes | None      # client identity (codec.Message.client_key); None for DECLINED rows
    mac: str
    hostname: str | None
    expiry: float          # wall-clock seconds; the row stops protecting the address after it
    state: str

    def active(self, now: float) -> bool:
        return self.expiry > now and self.state != RELEASED


Ranges = tuple[tuple[IPv4Address, IPv4Address], ...]


class LeaseTable:
    def __init__(self, leases: Iterable[Lease] = ()):
        self.by_ip: dict[IPv4Address, Lease] = {}
        self.by_key: dict[bytes, Lease] = {}
        self._cursor: dict[Ranges, int] = {}
        self._version = 0                            # bumped on every change of the rows
        self._full: dict[Ranges, tuple[int, float]] = {}  # ranges → (version, no free row before)
        self.pool_scans = 0                          # full scans of a pool for a free address
        self._held: dict[Ranges, _Held] = {}          # pools whose free addresses are counted
        for lease in leases:
            self.put(lease)

    def __len__(self) -> int:
        return len(self.by_ip)

    def put(self, lease: Lease) -> Lease:
        self._version += 1
        old = self.by_ip.get(lease.ip)
        if old is not None and old.key is not None and old.key != lease.key \
                and self.by_key.get(old.key) is old:
            del self.by_key[old.key]
        self._store(lease.ip, lease)
        if lease.key is not None:
            previous = self.by_key.get(lease.key)
            if previous is not None and previous.ip != lease.ip and previous.state == OFFERED:
                # An unaccepted offer at another address is dropped, not kept as a hold.
                if self.by_ip.get(previous.ip) is previous:
                    self._store(previous.ip, None)
            self.by_key[lease.key] = lease
        return lease

    def _store(self, ip: IPv4Address, row: Lease | None) -> None:
        """The one place by_ip changes (None deletes), so the pool counters follow."""
        if row is None:
            self.by_ip.pop(ip, None)
        else:
            self.by_ip[ip] = row
        for held in self._held.values():
            if held.covers(ip):
                held.update(ip, row)

    def free_count(self, ranges: Ranges, now: float) -> int:
        """Addresses in `ranges` that no active row holds (offered, bound or declined rows
        whose expiry is still ahead). Incremental: O(log n) a change, not a pool scan."""
        held = self._held_in(ranges)
        return held.size - held.count(now)

    def holders(self, ranges: Ranges, now: float) -> list[Lease]:
        """The active rows holding an address of `ranges` (what free_count does not count):
        as many as are held, not a scan of the pool or of the table."""
        held = self._held_in(ranges)
        held.count(now)                     # forgets the expired
        return [self.by_ip[ip] for ip in held.until]

    def _held_in(self, ranges: Ranges) -> "_Held":
        held = self._held.get(ranges)
        if held is None:
            held = self._held[ranges] = _Held(ranges)
            for ip, row in self.by_ip.items():
                if held.covers(ip):
                    held.update(ip, row)
        return held

    def of_client(self, key: bytes) -> Lease | None:
        return self.by_key.get(key)

    def at(self, ip: IPv4Address) -> Lease | None:
        return self.by_ip.get(ip)

    def free_for(self, ip: IPv4Address, key: bytes, now: float) -> bool:
        row = self.by_ip.get(ip)
        if row is None:
            return True
        if row.state == DECLINED:
            return row.expiry <= now
        return row.key == key or not row.active(now)

    def allocate(self, ranges: Ranges, key: bytes, requested: IPv4Address | None, now: float,
                 taken: Callable[[IPv4Address], bool] = lambda ip: False,
                 network: IPv4Network | None = None) -> IPv4Address | None:
        """Pick an address for `key` from `ranges`: its previous one, the requested one,
        a never-used one, then the one that expired longest ago. `taken` marks reservations."""
        def in_pool(ip: IPv4Address) -> bool:
            return any(lo <= ip <= hi for lo, hi in ranges)

        mine = self.by_key.get(key)
        if mine is not None and mine.state != DECLINED and in_pool(mine.ip) \
                and self.by_ip.get(mine.ip) is mine and not taken(mine.ip):
            return mine.ip
        if requested is not None and in_pool(requested) and self.free_for(requested, key, now) \
                and not taken(requested):
            return requested
        # An exhausted pool stays exhausted until a row changes or the soonest expiry: without
        # this, each DISCOVER of a flood rescans the whole pool (1.4 ms at 1,024 addresses),
        # and the reactor falls seconds behind. At most 1 s, for reservations that change.
        full = self._full.get(ranges)
        if full is not None and full[0] == self._version and now < full[1]:
            return None
        self.pool_scans += 1
        sizes = [int(hi) - int(lo) + 1 for lo, hi in ranges]
        total = sum(sizes)
        start = self._cursor.get(ranges, 0)
        for step in range(total):
            offset = (start + step) % total
            ip = _nth(ranges, sizes, offset)
            if ip not in self.by_ip and not taken(ip) and not _edge(ip, network):
                self._cursor[ranges] = offset + 1
                return ip
        best: Lease | None = None
        soonest = now + 1.0
        for lo, hi in ranges:
            for row in self._rows_between(lo, hi, total):
                if self.free_for(row.ip, key, now) and not taken(row.ip):
                    if best is None or row.expiry < best.expiry:
                        best = row
                elif row.expiry > now:
                    soonest = min(soonest, row.expiry)
        if best is None:
            self._full[ranges] = (self._version, soonest)
        return best.ip if best is not None else None

    def _rows_between(self, lo: IPv4Address, hi: IPv4Address, total: int):
        if total < len(self.by_ip):
            for n in range(int(lo), int(hi) + 1):
                row = self.by_ip.get(IPv4Address(n))
                if row is not None:
                    yield row
        else:
            for ip, row in list(self.by_ip.items()):
                if lo <= ip <= hi:
                    yield row

    def offer(self, ip: IPv4Address, key: bytes, mac: str, hostname: str | None, until: float,
              now: float) -> Lease:
        row = self.by_ip.get(ip)
        if row is not None and row.key == key and row.state == BOUND and row.active(now):
            return row  # an offer never shortens a bound lease
        return self.put(Lease(ip, key, mac, hostname, until, OFFERED))

    def bind(self, ip: IPv4Address, key: bytes, mac: str, hostname: str | None,
             expiry: float) -> tuple[Lease, Lease | None]:
        """Bind; returns (lease, previous lease of this client at another address, now freed)."""
        previous = self.by_key.get(key)
        moved = None
        if previous is not None and previous.ip != ip and previous.state == BOUND \
                and self.by_ip.get(previous.ip) is previous:
            self._version += 1
            moved = replace(previous, state=RELEASED)
            self._store(previous.ip, moved)
        return self.put(Lease(ip, key, mac, hostname, expiry, BOUND)), moved

    def forget_offer(self, key: bytes) -> None:
        row = self.by_key.get(key)
        if row is not None and row.state == OFFERED:
            self._version += 1
            del self.by_key[key]
            if self.by_ip.get(row.ip) is row:
                self._store(row.ip, None)

    def release(self, ip: IPv4Address, key: bytes, now: float) -> Lease | None:
        row = self.by_ip.get(ip)
        if row is None or row.key != key or row.state != BOUND:
            return None
        return self.put(replace(row, state=RELEASED, expiry=now))

    def decline(self, ip: IPv4Address, until: float) -> Lease:
        row = self.by_ip.get(ip)
        if row is not None and row.key is not None and self.by_key.get(row.key) is row:
            del self.by_key[row.key]
        lease = Lease(ip, None, row.mac if row else "", None, until, DECLINED)
        self._version += 1
        self._store(ip, lease)
        return lease

    def bound(self, now: float) -> list[Lease]:
        return [row for row in self.by_ip.values() if row.state == BOUND and row.active(now)]


class _Held:
    """The addresses of one pool held by a row, with each row's expiry. Rows are added and
    removed as they change; expiry passes silently, so a heap pops the expired as `now`
    advances (a stale heap entry, from a row since replaced, is skipped)."""

    def __init__(self, ranges: Ranges):
        self.ranges = ranges
        self.size = sum(int(hi) - int(lo) + 1 for lo, hi in ranges)
        self.until: dict[IPv4Address, float] = {}
        self.heap: list[tuple[float, IPv4Address]] = []

    def covers(self, ip: IPv4Address) -> bool:
        return any(lo <= ip <= hi for lo, hi in self.ranges)

    def update(self, ip: IPv4Address, row: Lease | None) -> None:
        if row is None or row.state == RELEASED:
            self.until.pop(ip, None)
            return
        self.until[ip] = row.expiry
        heapq.heappush(self.heap, (row.expiry, ip))
        if len(self.heap) > 4 * len(self.until) + 1024:   # renewals leave stale entries
            self.heap = [(until, ip) for ip, until in self.until.items()]
            heapq.heapify(self.heap)

    def count(self, now: float) -> int:
        heap, until = self.heap, self.until
        while heap and heap[0][0] <= now:
            expiry, ip = heapq.heappop(heap)
            if until.get(ip) == expiry:
                del until[ip]
        return len(until)


def _nth(ranges: Ranges, sizes: list[int], offset: int) -> IPv4Address:
    for (lo, _), size in zip(ranges, sizes):
        if offset < size:
            return IPv4Address(int(lo) + offset)
        offset -= size
    raise IndexError(offset)


def pool_size(ranges: Ranges, network: IPv4Network | None = None) -> int:
    """Addresses `ranges` can hand out: the network and broadcast addresses never count."""
    edges = set() if network is None else {network.network_address, network.broadcast_address}
    inside = [ip for ip in edges if _edge(ip, network) and any(lo <= ip <= hi for lo, hi in ranges)]
    return sum(int(hi) - int(lo) + 1 for lo, hi in ranges) - len(inside)


def _edge(ip: IPv4Address, network: IPv4Network | None) -> bool:
    """Never hand out a network or broadcast address even if a pool range covers it."""
    return network is not None and network.prefixlen < 31 and \
        (ip == network.network_address or ip == network.broadcast_address)
