"""What an export is, for the whole package (pure: no file is opened here).

Every published image is an export, by name. The catalog reads the image store at each
request (LIST, INFO, GO), so a new image is exportable at once and nothing is ever reloaded.
Opening the file is I/O: the adapter hands the catalog an ``opener`` (nbd.listener.open_export)
and closes the descriptor when the connection ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, Protocol


@dataclass(frozen=True)
class ExportInfo:
    """What LIST, INFO and the meta contexts tell about an export."""
    name: str
    size: int
    description: str = ""


@dataclass(frozen=True)
class OpenExport(ExportInfo):
    """An export's file held open for one connection's lifetime: a newer version published
    or the file deleted meanwhile changes nothing for this reader. ``size`` is the size of
    the file as opened; ``file`` its identity ("<st_dev>-<st_ino>"), by which a restarted
    daemon finds it in the fd store."""
    fd: int = field(kw_only=True)
    file: str = field(default="", kw_only=True)


class Catalog(Protocol):
    """What the handshake asks about exports."""

    def names(self) -> list[str]: ...
    def lookup(self, name: str) -> ExportInfo | None: ...   # INFO, meta contexts
    def open(self, name: str) -> OpenExport | None: ...     # GO, EXPORT_NAME: held open


class Images(Protocol):
    """The image store as the catalog reads it (bootserverd.images.store.ImageStore)."""

    def published(self) -> Iterable[Any]: ...
    def get(self, name: str) -> Any | None: ...


# (the export, its image's path) -> the file opened, or None when it is gone
Opener = Callable[[ExportInfo, str | PathLike[str]], OpenExport | None]


def export_info(image: Any) -> ExportInfo:
    """An image as an export; the description is 'series version arch' from its name."""
    parts = [getattr(image, k, None) for k in ("series", "version", "arch")]
    return ExportInfo(image.name, image.size, " ".join(p for p in parts if p))


class ExportCatalog:
    """The Catalog over the image store: published images by name."""

    def __init__(self, images: Images, opener: Opener) -> None:
        self._images = images
        self._opener = opener

    def names(self) -> list[str]:
        return [image.name for image in self._images.published()]

    def lookup(self, name: str) -> ExportInfo | None:
        image = self._images.get(name)
        return None if image is None else export_info(image)

    def open(self, name: str) -> OpenExport | None:
        """None when the image is unknown, or gone by the time the opener looks."""
        image = self._images.get(name)
        return None if image is None else self._opener(export_info(image), image.path)
