"""The seam between the app and whatever feeds the model: the YAML file or the LDAP replica."""

from __future__ import annotations

from typing import Callable, Protocol

from bootserverd.model.objects import InventoryRecords


class InventorySource(Protocol):
    def load(self) -> InventoryRecords:
        """Read the current content synchronously (start-up, check-config); raises SchemaError."""

    def start(self, deliver: Callable[[InventoryRecords], None]) -> None:
        """Begin following changes; ``deliver`` gets each new InventoryRecords on the reactor thread."""

    def stop(self) -> None: ...

    def reload(self) -> None:
        """Re-read now (SIGHUP)."""

    def status(self) -> dict:
        """The source's section of /status."""

    def lag_seconds(self) -> float:
        """How far the model may be behind the source of truth (0 for a local file)."""
