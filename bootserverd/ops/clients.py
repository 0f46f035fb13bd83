"""Per-client counts of what is open now (pure): one rule for TFTP transfers, NBD connections
and HTTP connections, so each service's per-address cap counts the same way."""

from __future__ import annotations


class ClientCounts:
    """Address → how many of its transfers or connections are open. An address with none is
    not kept, so a storm of one-off clients leaves nothing behind."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}
        self.total = 0

    def begin(self, host: str) -> None:
        self._open[host] = self._open.get(host, 0) + 1
        self.total += 1

    def end(self, host: str) -> None:
        left = self._open.get(host, 0) - 1
        if left < 0:
            return                   # an end without a begin: nothing to undo
        self.total -= 1
        if left:
            self._open[host] = left
        else:
            del self._open[host]

    def __getitem__(self, host: str) -> int:
        return self._open.get(host, 0)

    def __len__(self) -> int:
        """How many addresses have something open."""
        return len(self._open)

    def as_dict(self) -> dict[str, int]:
        return dict(self._open)
