"""Regression (reliability: 10,000-DISCOVER flood): once the pool was exhausted every DISCOVER
rescanned all of it (1.4 ms each at 1,024 addresses), the reactor fell seconds behind and the
reserved device's own DISCOVERs timed out in the queue. Fixed in dhcp/leases.py: an exhausted
pool is remembered until a row changes, the soonest expiry, or 1 s."""

from ipaddress import IPv4Address as A

from dhcp.leases import LeaseTable

POOL = ((A("10.0.0.10"), A("10.0.0.19")),)


def key(n: int) -> bytes:
    return b"\x01" + n.to_bytes(6, "big")


def fill(table: LeaseTable, now: float) -> None:
    for n in range(10):
        ip = table.allocate(POOL, key(n), None, now)
        table.offer(ip, key(n), f"m{n}", None, now + 60, now)


def test_exhausted_pool_is_not_rescanned_for_every_discover():
    table = LeaseTable()
    fill(table, 1000.0)
    before = table.pool_scans
    for n in range(100, 1100):
        assert table.allocate(POOL, key(n), None, 1000.5) is None
    assert table.pool_scans - before == 1


def test_an_address_freed_or_expired_is_found_at_once():
    table = LeaseTable()
    fill(table, 1000.0)
    assert table.allocate(POOL, key(50), None, 1000.0) is None
    table.forget_offer(key(3))                       # a change in the table: found now
    assert table.allocate(POOL, key(50), None, 1000.0) == A("10.0.0.13")
    table.offer(A("10.0.0.13"), key(50), "m50", None, 1060.0, 1000.0)
    assert table.allocate(POOL, key(51), None, 1000.2) is None
    assert table.allocate(POOL, key(51), None, 1001.3) is None   # re-checked after 1 s: still full
    assert table.allocate(POOL, key(51), None, 1060.5) is not None   # the offers expired
