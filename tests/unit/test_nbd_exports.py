"""nbd.exports: the catalog over an image store, with plain objects (the opener is injected)."""

import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nbd.exports import ExportCatalog, ExportInfo, OpenExport, export_info  # noqa: E402


class Store:
    def __init__(self, *images):
        self.images = {i.name: i for i in images}

    def published(self):
        return list(self.images.values())

    def get(self, name):
        return self.images.get(name)


def image(name, size=4096, series=None, version=None, arch=None):
    return SimpleNamespace(name=name, size=size, path=f"/images/{name}.img", series=series,
                           version=version, arch=arch)


def test_exports_are_the_published_images_read_at_each_request():
    store = Store(image("a"))
    catalog = ExportCatalog(store, opener=lambda info, path: None)
    assert catalog.names() == ["a"]
    store.images["b"] = image("b")                      # published: exportable at once
    assert catalog.names() == ["a", "b"]
    del store.images["a"]                               # retired: gone for newcomers
    assert catalog.names() == ["b"] and catalog.lookup("a") is None and catalog.open("a") is None


def test_lookup_describes_the_image_by_its_name_parts():
    full = image("x", 10, series="bookworm", version="2024-01-02-030405", arch="amd64")
    assert export_info(full) == ExportInfo("x", 10, "bookworm 2024-01-02-030405 amd64")
    assert export_info(image("y", 5, arch="i386")) == ExportInfo("y", 5, "i386")
    assert ExportCatalog(Store(full), lambda i, p: None).lookup("x") == export_info(full)


def test_open_hands_the_opener_the_export_and_its_path():
    calls = []

    def opener(info, path):
        calls.append((info, path))
        return OpenExport(info.name, 8192, info.description, fd=7)   # the file as opened

    opened = ExportCatalog(Store(image("a", 4096, arch="amd64")), opener).open("a")
    assert calls == [(ExportInfo("a", 4096, "amd64"), "/images/a.img")]
    assert (opened.name, opened.size, opened.description, opened.fd) == ("a", 8192, "amd64", 7)
    assert isinstance(opened, ExportInfo)               # what INFO says of it, plus the descriptor


def test_an_opener_that_finds_the_file_gone_makes_the_export_unknown():
    assert ExportCatalog(Store(image("a")), lambda info, path: None).open("a") is None
