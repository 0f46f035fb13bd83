"""File downloads: boot files (kernels, initrds, iPXE scripts, the TFTP root) and images.

Every path goes through a confined namespace: ``BootFiles.open`` (which refuses '..' and
anything resolving outside its root) or the image store's published names. Nothing here
joins a client's text onto a filesystem path.
"""

from __future__ import annotations

import os
import secrets
import stat
from typing import Callable

from twisted.web.server import NOT_DONE_YET

from bootserverd.boot.files import BootFileError, DiskFile, is_kernel_name
from bootserverd.images.store import file_stamp
from bootserverd.model.objects import SAFE_IMAGE_NAME
from services.http.range import decide, multipart_layout
from services.http.transfer import FileBody, SegmentedFile, TransferRecord
from services.http.util import client_ip, send_error, send_json

OCTETS = b"application/octet-stream"


def open_checked(path, stamp: tuple | None = None) -> DiskFile | None:
    """Open a regular file without following a final symlink; None if it is gone or is no
    longer the version ``stamp`` (dev, ino, size, mtime_ns) names."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (
            stamp is not None and file_stamp(st) != tuple(stamp)):
        os.close(fd)
        return None
    return DiskFile(str(path), fd, st.st_size)


class FileSender:
    """Range/ETag handling + streaming for any open file."""

    def __init__(self, reactor, on_transfer: Callable[[TransferRecord], None], stall_timeout: float,
                 allow_sendfile: bool = True, bucket=None):
        """``bucket``: the bandwidth share its transfers draw from (services/http/bucket.py)."""
        self.reactor = reactor
        self.on_transfer = on_transfer
        self.stall_timeout = stall_timeout
        self.allow_sendfile = allow_sendfile
        self.bucket = bucket

    def send(self, request, file, *, etag: str | None = None, content_type: bytes = OCTETS,
             cache: bytes | None = None):
        header = request.getHeader
        decision = decide(request.method.decode("latin-1"), file.size, etag, _text(header(b"range")),
                          _text(header(b"if-range")), _text(header(b"if-none-match")))
        request.setHeader(b"Accept-Ranges", b"bytes")
        if etag is not None:
            request.setHeader(b"ETag", etag.encode())
        if cache is not None:
            request.setHeader(b"Cache-Control", cache)
        if decision.status in (304, 416):
            file.close()
            if decision.status == 304:
                request.setResponseCode(304)
                return b""
            return send_error(request, 416, f"range not satisfiable (size {file.size})",
                              headers={"Content-Range": decision.content_range})
        request.setResponseCode(decision.status)
        start, length, size = decision.start, decision.length, file.size
        if decision.multipart:                     # RFC 9110 §14.6, e.g. zsync's requests
            boundary = secrets.token_hex(12)
            segments, length = multipart_layout(decision.parts, file.size, content_type.decode("latin-1"),
                                                boundary)
            file = SegmentedFile(file, segments, length)
            content_type = f"multipart/byteranges; boundary={boundary}".encode()
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Content-Length", str(length).encode())
        if decision.content_range:
            request.setHeader(b"Content-Range", decision.content_range.encode())
        record = TransferRecord(client=client_ip(request), method=request.method.decode("latin-1"),
                                path=request.path.decode("latin-1", "replace")[:300],
                                status=decision.status, start=start, length=length,
                                size=size, parts=len(decision.parts))
        FileBody(request, file, record, self.reactor, self.on_transfer, self.stall_timeout,
                 self.allow_sendfile, self.bucket).start()
        return NOT_DONE_YET


    def send_cached(self, request, answer, what: str, content_type: bytes = OCTETS):
        """A product of the diff cache (a diff, a zsync file): its refusal, 503 + Retry-After
        while it is made, or the file — checked against the size the cache recorded."""
        from bootserverd.images.diffs import Building, Refused
        if isinstance(answer, Refused):
            return send_error(request, answer.code, answer.reason)
        if isinstance(answer, Building):
            return send_error(request, 503, f"{what} is being made; retry later",
                              headers={"Retry-After": answer.retry_after}, level="debug")
        file = open_checked(answer.path)
        if file is None or file.size != answer.size:     # evicted or replaced since the lookup
            if file is not None:
                file.close()
            return send_error(request, 503, f"{what} was just evicted; retry", headers={"Retry-After": 1})
        return self.send(request, file, etag=f'"{answer.sha256}"', content_type=content_type)

def _text(value: bytes | None) -> str | None:
    return value.decode("latin-1") if value is not None else None


class BootFileResource:
    """/boot/<image>/vmlinuz[-<v>]|initrd.img[-<v>], /ipxe/<name>.ipxe and /tftp/<path> via BootFiles."""

    def __init__(self, boot_files, sender: FileSender):
        self.boot_files = boot_files
        self.sender = sender

    def boot(self, request, parts: list[str]):
        # BootFiles serves a versioned name only when the image's kernel map has that version
        if len(parts) != 2 or not is_kernel_name(parts[1]):
            return send_error(request, 404, "boot files are /boot/<image>/vmlinuz[-<version>] and "
                                            "/boot/<image>/initrd.img[-<version>]")
        return self._serve(request, f"images/{parts[0]}/{parts[1]}", OCTETS)

    def ipxe(self, request, parts: list[str]):
        if len(parts) != 1 or not parts[0].endswith(".ipxe"):
            return send_error(request, 404, "iPXE scripts are /ipxe/<mac>.ipxe or /ipxe/default.ipxe")
        return self._serve(request, f"ipxe/{parts[0]}", b"text/plain; charset=utf-8", cache=b"no-store")

    def tftp(self, request, parts: list[str]):
        return self._serve(request, "/".join(parts), OCTETS)

    def _serve(self, request, path: str, content_type: bytes, cache: bytes | None = None):
        try:
            file = self.boot_files.open(path, client_ip(request))
        except BootFileError as exc:
            code = 403 if exc.kind == "access-denied" else 404
            return send_error(request, code, str(exc))
        return self.sender.send(request, file, content_type=content_type, cache=cache)


def image_etag(sha256: str) -> str:
    return f'"{sha256}"'


class ImageResource:
    """/images/ (JSON list), /images/<name>.img (the squashfs file) and
    /images/<name>.img.zsync (its zsync control file, made on demand by the diff cache)."""

    def __init__(self, images, sender: FileSender, release_state: Callable[[str], str], zsync=None):
        self.images = images
        self.sender = sender
        self.release_state = release_state
        self.zsync = zsync                      # name → Ready | Building | Refused (DiffCache.lookup_zsync)

    def listing(self) -> list[dict]:
        return [dict(image.summary(), release=self.release_state(image.name), url=f"/images/{image.name}.img")
                for image in self.images.published()]

    def render(self, request, parts: list[str]):
        if not parts or parts == [""]:
            return send_json(request, {"images": self.listing()})
        leaf = parts[0]
        if len(parts) != 1 or not (leaf.endswith(".img") or leaf.endswith(".img.zsync")):
            return send_error(request, 404, "images are /images/<name>.img")
        zsync = leaf.endswith(".zsync")
        name = leaf[:-len(".img.zsync")] if zsync else leaf[:-len(".img")]
        image = self.images.get(name) if SAFE_IMAGE_NAME.match(name) else None
        if image is None:
            return send_error(request, 404, f"image {name[:200]!r} is not published")
        if zsync:
            return self._zsync(request, name)
        file = open_checked(image.path, image.stamp)
        if file is None:
            return send_error(request, 503, f"image {name} changed on disk; it is being re-indexed",
                              headers={"Retry-After": 5})
        return self.sender.send(request, file, etag=image_etag(image.sha256))

    def _zsync(self, request, name: str):
        if self.zsync is None:
            return send_error(request, 404, "zsync control files are not offered here")
        return self.sender.send_cached(request, self.zsync(name), f"the zsync control file of {name}",
                                       content_type=b"application/x-zsync")
