"""File helpers the tests share."""

from __future__ import annotations

import hashlib


def sha256(path) -> str:
    """The file's sha256 (hex), read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
