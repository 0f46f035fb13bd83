"""Regression (reliability: DHCP flood): every DISCOVER of a pool-exhaustion flood wrote its
own "no free address" line (903 lines for 1000 packets). Fixed in dhcp/machine.py (the
event carries a throttle key) and dhcp/protocol.py (one line a minute per key, with a count)."""

from twisted.logger import LogLevel, globalLogPublisher

from dhcp.machine import Outcome
from dhcp.protocol import DhcpHandler


def test_pool_exhaustion_is_one_line_a_minute():
    clock = [1000.0]
    handler = DhcpHandler(machine=None, commit=None, interfaces=None, clock=lambda: clock[0])
    lines = []
    observer = lambda e: lines.append(e) if e.get("log_level") == LogLevel.info else None
    globalLogPublisher.addObserver(observer)
    try:
        for i in range(500):
            clock[0] += 0.01
            handler._act(None, Outcome(event=f"no free address for {i}", throttle="pool 10.0.0.0/24"))
        clock[0] += 60
        handler._act(None, Outcome(event="no free address for late", throttle="pool 10.0.0.0/24"))
        handler._act(None, Outcome(event="ACK 10.0.0.5 to x"))
    finally:
        globalLogPublisher.removeObserver(observer)
    texts = [e.get("e") or f"{e.get('n')} more" for e in lines]
    assert texts == ["no free address for 0", "499 more", "no free address for late", "ACK 10.0.0.5 to x"]
