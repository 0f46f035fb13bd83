"""Who may connect to the NBD listener (pure: an address, the counts and ``now`` in, a verdict out).

``nbd.max_connections`` caps the listener and ``nbd.max_connections_per_client`` one address:
a classroom booting at once fits, one host looping connect() does not. A refused connection
is closed before the greeting. The adapter calls ``decide`` for each new connection with the
number open now; ``begin(host)`` when it accepts one and ``end(host)`` when it closes (the
per-address counts live here). A refusal is worth a log line once per address and limit per
interval, the next line saying how many were hidden (ops.ratelimit), so a flood cannot flood
the journal.
"""

from __future__ import annotations

from typing import NamedTuple

from bootserverd.ops.clients import ClientCounts
from bootserverd.ops.ratelimit import LogThrottle

MAX_CONNECTIONS = "nbd.max_connections"
MAX_PER_CLIENT = "nbd.max_connections_per_client"
LOG_INTERVAL = 60.0


class Refuse(NamedTuple):
    host: str
    limit: str              # the config key of the limit reached (MAX_CONNECTIONS, MAX_PER_CLIENT)
    why: str                # "512 connections", "16 connections from it"
    log: bool               # False: this address and limit were logged within the interval
    hidden: int = 0         # refusals of this address and limit not logged since the last line

    @property
    def throttle_key(self) -> tuple[str, str]:
        return throttle_key(self.host, self.limit)


def throttle_key(host: str, limit: str) -> tuple[str, str]:
    """Refusals are logged once per (address, limit) per interval."""
    return (host, limit)


def limit_reached(host_connections: int, connections: int, max_connections: int,
                  max_per_client: int) -> tuple[str, str] | None:
    """(limit, why) when one more connection from this address is too many, else None."""
    if connections >= max_connections:
        return MAX_CONNECTIONS, f"{connections} connections"
    if host_connections >= max_per_client:
        return MAX_PER_CLIENT, f"{host_connections} connections from it"
    return None


class Admission:
    def __init__(self, max_connections: int = 512, max_per_client: int = 16,
                 log_interval: float = LOG_INTERVAL) -> None:
        self.max_connections = max_connections
        self.max_per_client = max_per_client
        self.per_client = ClientCounts()         # host -> open connections
        self.refused = 0
        self._throttle = LogThrottle(log_interval)

    def decide(self, host: str, connections: int, now: float) -> Refuse | None:
        """None: accept (then ``begin(host)``). ``connections``: how many are open now."""
        reached = limit_reached(self.per_client[host], connections,
                                self.max_connections, self.max_per_client)
        if reached is None:
            return None
        self.refused += 1
        limit, why = reached
        hidden = self._throttle.admit(throttle_key(host, limit), now)
        return Refuse(host, limit, why, hidden is not None, hidden or 0)

    def begin(self, host: str) -> None:
        self.per_client.begin(host)

    def end(self, host: str) -> None:
        self.per_client.end(host)
