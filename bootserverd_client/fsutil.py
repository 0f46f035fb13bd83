"""Durable file writes and hashing, stdlib only: the client side (the updater) and the server share it.

A crash leaves the old content or the new, never half: write a temporary beside the
target, fsync it, rename it over the target, fsync the directory that holds the name.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

HASH_CHUNK = 4 << 20   # large reads: hashing a 7 GB image runs at disk speed


def fsync_dir(directory: Path) -> None:
    """Make a rename (or a new name) in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """temp file + fsync + rename + directory fsync; the temporary is removed on any failure
    (on a full disk it holds the very space the next try needs)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buffer):
            digest.update(view[:n])
    return digest.hexdigest()
