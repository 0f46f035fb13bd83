"""One record of a finished transfer for every service, and one ledger of them (pure).

A TFTP transfer, an HTTP response and an NBD session each end in their protocol's own record
(``tftp.session.TransferRecord``, ``services.http.transfer.TransferRecord``,
``nbd.transmission.SessionRecord``: the details their log line needs). Each gives a ``Transfer``
(``as_transfer()``), and from there one path counts it (``/status``, ``/metrics``) and hands it
to the boot report, so the three services cannot count or report in three ways.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Transfer:
    service: str        # tftp | http | nbd
    client: str         # the peer's address, without the port
    what: str           # the file, the path or the export ("" when none was chosen)
    bytes: int          # payload bytes the client got
    seconds: float
    outcome: str        # a metrics label: done | refused | probe | aborted | stalled | failed | no_export
    ok: bool
    summary: str        # what the boot report shows for it

    @property
    def mbps(self) -> float:
        return self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0


class TransferLedger:
    """Counts of one service's finished transfers by outcome and their bytes; each one is also
    counted in ``metrics`` (bootserverd_transfers_total, bootserverd_sent_bytes_total) unless
    ``count_bytes`` is False (NBD adds its bytes per scrape, as they are sent), and passed on."""

    def __init__(self, service: str, metrics=None, on_transfer: Callable[[Transfer], None] | None = None,
                 count_bytes: bool = True) -> None:
        self.service = service
        self.metrics = metrics
        self.on_transfer = on_transfer
        self.count_bytes = count_bytes
        self.outcomes: Counter = Counter()
        self.bytes_sent = 0

    def add(self, transfer: Transfer) -> None:
        self.outcomes[transfer.outcome] += 1
        self.bytes_sent += transfer.bytes
        if self.metrics is not None:
            self.metrics.transfers.labels(service=self.service, outcome=transfer.outcome).inc()
            if self.count_bytes:
                self.metrics.bytes_sent.labels(service=self.service).inc(transfer.bytes)
        if self.on_transfer is not None:
            self.on_transfer(transfer)

    @property
    def ok(self) -> int:
        return self.outcomes["done"]

    def failed(self) -> int:
        """Transfers that did not end well (refusals and UEFI's tsize probes are not failures)."""
        return sum(n for outcome, n in self.outcomes.items() if outcome not in ("done", "probe", "refused"))
