"""Where each file's bytes sit inside a squashfs image: path → on-disk extents.

Prewarm maps a previous version's traced boot reads onto a new version by file
(bootserverd/images/prewarm.py ``map_by_file``); ``unsquashfs`` lists files but not where their
blocks are, so this reads the superblock, the inode and directory tables and the fragment table
itself (squashfs 4.0, as the kernel's fs/squashfs and squashfs-tools' squashfs_fs.h lay them
out). Pure: it reads through a ``read(offset, size) -> bytes`` callable and decompresses with
the standard library (gzip, xz, lzma) or zstandard/lz4 when installed; it never opens a file.

A file's extents are its data blocks (sparse blocks have none) and, for a tail in a fragment, the
whole fragment block (compressed as one). ``METADATA`` (prewarm.METADATA) holds the superblock
and everything from the inode table to the end of the filesystem: what a mount reads first.
"""

from __future__ import annotations

import lzma
import posixpath
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from bootserverd.images.prewarm import METADATA, Range

MAGIC = 0x73717368
SUPERBLOCK = struct.Struct("<IIIIIHHHHHHQQQQQQQQ")        # 96 bytes
NO_FRAGMENT = 0xFFFFFFFF
METADATA_SIZE = 8192
MAX_FILES = 2_000_000                                     # a corrupt table cannot loop for ever


class LayoutError(ValueError):
    """Not a squashfs 4.0 image, a compressor we cannot read, or a corrupt table."""


@dataclass(frozen=True)
class Layout:
    block_size: int
    bytes_used: int
    files: dict[str, tuple[Range, ...]]     # path → extents; METADATA included

    def __len__(self) -> int:
        return len(self.files)


def _decompressor(compressor: int) -> Callable[[bytes], bytes]:
    if compressor == 1:
        return zlib.decompress
    if compressor == 4:
        return lambda data: lzma.decompress(data, format=lzma.FORMAT_XZ)
    if compressor == 2:
        return lambda data: lzma.decompress(data, format=lzma.FORMAT_ALONE)
    if compressor == 6:
        try:
            import zstandard
        except ImportError:
            raise LayoutError("zstd-compressed squashfs: the zstandard module is not installed") from None
        return lambda data: zstandard.ZstdDecompressor().decompress(data, max_output_size=METADATA_SIZE)
    if compressor == 5:
        try:
            import lz4.block
        except ImportError:
            raise LayoutError("lz4-compressed squashfs: the lz4 module is not installed") from None
        return lambda data: lz4.block.decompress(data, uncompressed_size=METADATA_SIZE)
    raise LayoutError(f"squashfs compressor {compressor} (lzo or unknown) is not supported here")


class _Metadata:
    """Reads a table of metadata blocks (each: a 2-byte header, then up to 8 KiB) by
    (block offset from the table start, offset inside the uncompressed block)."""

    def __init__(self, read, decompress, start: int) -> None:
        self.read, self.decompress, self.start = read, decompress, start
        self.blocks: dict[int, tuple[bytes, int]] = {}       # block offset → (data, next block offset)

    def block(self, rel: int) -> tuple[bytes, int]:
        cached = self.blocks.get(rel)
        if cached is None:
            header = self.read(self.start + rel, 2)
            if len(header) != 2:
                raise LayoutError(f"metadata block at {self.start + rel} is past the end of the image")
            word = struct.unpack("<H", header)[0]
            size = word & 0x7FFF
            raw = self.read(self.start + rel + 2, size)
            try:
                data = raw if word & 0x8000 else self.decompress(raw)
            except Exception as exc:
                raise LayoutError(f"metadata block at {self.start + rel}: {exc}") from None
            cached = self.blocks[rel] = (data, rel + 2 + size)
        return cached

    def take(self, rel: int, offset: int, size: int) -> tuple[bytes, int, int]:
        """``size`` bytes from (rel, offset), and the position after them."""
        out = bytearray()
        while len(out) < size:
            data, following = self.block(rel)
            if offset >= len(data):
                if not data:
                    raise LayoutError("empty metadata block")
                rel, offset = following, offset - len(data)
                continue
            piece = data[offset:offset + size - len(out)]
            out += piece
            offset += len(piece)
        return bytes(out), rel, offset


def read_layout(read: Callable[[int, int], bytes]) -> Layout:
    """Every regular file's extents (hard links under each name), and METADATA."""
    head = read(0, SUPERBLOCK.size)
    if len(head) != SUPERBLOCK.size:
        raise LayoutError("too short for a squashfs superblock")
    (magic, _inodes, _mtime, block_size, fragments, compressor, _block_log, _flags, _ids, major, _minor,
     root, bytes_used, _id_table, _xattr, inode_table, directory_table, fragment_table,
     _export) = SUPERBLOCK.unpack(head)
    if magic != MAGIC or major != 4:
        raise LayoutError("not a squashfs 4.0 image")
    decompress = _decompressor(compressor)
    inodes = _Metadata(read, decompress, inode_table)
    directories = _Metadata(read, decompress, directory_table)
    fragment_extents = _fragments(read, decompress, fragment_table, fragments)

    def inode(ref: int) -> tuple[int, int, int]:
        """(type, where the type's own fields start) of the inode ``ref`` points at."""
        common, rel, offset = inodes.take(ref >> 16, ref & 0xFFFF, 16)
        return struct.unpack("<H", common[:2])[0], rel, offset

    def file_extents(kind: int, rel: int, offset: int) -> tuple[Range, ...]:
        if kind == 2:
            body, rel, offset = inodes.take(rel, offset, 16)
            start, fragment, _frag_offset, size = struct.unpack("<IIII", body)
        else:
            body, rel, offset = inodes.take(rel, offset, 40)
            start, size, _sparse, _links, fragment, _frag_offset, _xattr = struct.unpack("<QQQIIII", body)
        count = size // block_size if fragment != NO_FRAGMENT else -(-size // block_size)
        sizes, rel, offset = inodes.take(rel, offset, 4 * count)
        extents = []
        position = start
        for word in struct.unpack(f"<{count}I", sizes):
            length = word & 0xFFFFFF
            if length:
                extents.append((position, length))
            position += length
        if fragment != NO_FRAGMENT:
            if fragment >= len(fragment_extents):
                raise LayoutError(f"fragment {fragment} out of range")
            extents.append(fragment_extents[fragment])
        return tuple(extents)

    files: dict[str, tuple[Range, ...]] = {}
    pending = [("/", root)]
    seen = 0
    while pending:
        path, ref = pending.pop()
        kind, rel, offset = inode(ref)
        if kind in (2, 9):
            files[path] = file_extents(kind, rel, offset)
        elif kind in (1, 8):
            for name, child in _directory(inodes, directories, kind, rel, offset):
                seen += 1
                if seen > MAX_FILES:
                    raise LayoutError(f"more than {MAX_FILES} entries")
                pending.append((posixpath.join(path, name), child))
    files[METADATA] = ((0, SUPERBLOCK.size), (inode_table, max(0, bytes_used - inode_table)))
    return Layout(block_size, bytes_used, files)


def _fragments(read, decompress, table: int, count: int) -> list[Range]:
    """Each fragment block's (start, on-disk size)."""
    if count == 0 or count == NO_FRAGMENT:
        return []
    blocks = -(-count // 512)                       # 16-byte entries, 512 per metadata block
    pointers = struct.unpack(f"<{blocks}Q", read(table, 8 * blocks))
    out: list[Range] = []
    for pointer in pointers:
        meta = _Metadata(read, decompress, pointer)
        data, _ = meta.block(0)
        for i in range(0, len(data) - 15, 16):
            start, size, _unused = struct.unpack_from("<QII", data, i)
            out.append((start, size & 0xFFFFFF))
    return out[:count]


def _directory(inodes: _Metadata, directories: _Metadata, kind: int, rel: int, offset: int):
    """(name, inode ref) of each entry of the directory whose inode body starts at (rel, offset)."""
    if kind == 1:
        body, _, _ = inodes.take(rel, offset, 16)
        block, _links, size, block_offset, _parent = struct.unpack("<IIHHI", body)
    else:
        body, _, _ = inodes.take(rel, offset, 24)
        _links, size, block, _parent, _index_count, block_offset, _xattr = struct.unpack("<IIIIHHI", body)
    left = size - 3                                  # the size counts "." and ".." (3 bytes)
    rel, offset = block, block_offset
    while left > 0:
        header, rel, offset = directories.take(rel, offset, 12)
        count, start, _number = struct.unpack("<III", header)
        left -= 12
        for _ in range(count + 1):
            entry, rel, offset = directories.take(rel, offset, 8)
            entry_offset, _delta, _type, name_size = struct.unpack("<HhHH", entry)
            name, rel, offset = directories.take(rel, offset, name_size + 1)
            left -= 8 + name_size + 1
            if b"/" in name or name in (b".", b".."):
                raise LayoutError(f"bad directory entry name {name!r}")
            yield name.decode("utf-8", "surrogateescape"), (start << 16) | entry_offset
        if left < 0:
            raise LayoutError("directory listing overruns its size")
