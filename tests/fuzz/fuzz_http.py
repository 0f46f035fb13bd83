"""HTTP: Range/If-Range/If-None-Match decisions (services.http.range) and request paths
through the real router and resources (services.http.service*, bootserverd.boot.files) over a
scratch TFTP root that holds symlinks leading out of it.

Invariants: no handler raises (an exception is a 500 with a traceback); a 206 lies inside
the file; every file opened for a response is inside the TFTP root, the image directory or
the kernel directory; nothing is ever served from outside them.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote_to_bytes

from tests.fuzz import harness
from tests.fuzz.harness import Fdp

with harness.instrumented("services", "bootserverd.boot.files", "bootserverd.boot.resolver"):
    from bootserverd.boot.files import BootFiles
    from bootserverd.images.diffs import Refused
    from services.http.service import HTTPService, Router
    from services.http.ui.access import LOOPBACK
    from services.http.ui.resource import UiResource
    from bootserverd.boot.report import BootReport
    from services.http.devices import DeviceResource
    from services.http.diffs import DiffResource
    from services.http.files import BootFileResource, FileSender, ImageResource
    from services.http.range import decide, parse_range

from tests.fuzz.world import IMAGE, make_resolver

SCRATCH = Path(tempfile.mkdtemp(prefix="bootserverd-fuzz-http-"))
atexit.register(shutil.rmtree, SCRATCH, True)
ROOT, KERNELS, IMAGES = SCRATCH / "tftp", SCRATCH / "kernels", SCRATCH / "images"
for d in (ROOT / "sub", KERNELS, IMAGES):
    d.mkdir(parents=True)
(ROOT / "pxelinux.0").write_bytes(b"loader" * 100)
(ROOT / "sub" / "file.txt").write_bytes(b"hello\n")
(ROOT / "link-out").symlink_to("/etc/hostname")
(ROOT / "dir-out").symlink_to("/etc")
(ROOT / "sub" / "up").symlink_to("../..")
(SCRATCH / "secret").write_bytes(b"secret")
(KERNELS / "vmlinuz").write_bytes(b"kernel" * 50)
(KERNELS / "initrd.img").write_bytes(b"initrd" * 50)
(IMAGES / f"{IMAGE}.img").write_bytes(b"squashfs" * 64)
ALLOWED = tuple(str(p.resolve()) + "/" for p in (ROOT, KERNELS, IMAGES))

RESOLVER = make_resolver(root=KERNELS)
MODEL = RESOLVER.model
BOOT_FILES = BootFiles(ROOT, RESOLVER, MODEL)
_st = (IMAGES / f"{IMAGE}.img").stat()
IMAGE_REC = SimpleNamespace(name=IMAGE, path=IMAGES / f"{IMAGE}.img", size=_st.st_size, sha256="ab" * 32,
                            stamp=(_st.st_dev, _st.st_ino, _st.st_size, _st.st_mtime_ns),
                            summary=lambda: {"name": IMAGE})


class Images:
    def get(self, name):
        return IMAGE_REC if name == IMAGE else None

    def published(self):
        return [IMAGE_REC]


class Diffs:
    images = Images()

    def status(self):
        return {"cached_bytes": 0}

    def lookup(self, source, target):
        return Refused(404, "no diff in the fuzz world")


class Sender(FileSender):
    """Stands in for FileSender's sending (send_cached is the real one): applies the real
    Range decision, checks confinement."""

    def __init__(self):   # nothing to hold: send() below replaces the transfer
        pass

    def send(self, request, file, *, etag=None, content_type=b"", cache=None):
        fd = file.fileno()
        if fd is not None:
            real = os.readlink(f"/proc/self/fd/{fd}")
            assert real.startswith(ALLOWED), f"served {real} for {request.uri!r}"
        decision = decide(request.method.decode("latin-1"), file.size, etag,
                          request.headers.get(b"range"), request.headers.get(b"if-range"),
                          request.headers.get(b"if-none-match"))
        _check_decision(decision, file.size)
        file.close()
        return b""


class Clock:
    def seconds(self):
        return 1_000_000.0


class Request:
    """What the resources use of twisted.web's Request."""

    def __init__(self, method: bytes, uri: bytes, headers: dict, client: str):
        self.method, self.uri, self.headers = method, uri, headers
        path, _, query = uri.partition(b"?")
        self.path = path
        self.postpath = [unquote_to_bytes(s) for s in path[1:].split(b"/")]
        self.args = {}
        for pair in query.split(b"&"):
            key, _, value = pair.partition(b"=")
            self.args.setdefault(unquote_to_bytes(key), []).append(unquote_to_bytes(value))
        self.client = client
        self.code = 200
        self.startedWriting = 0

    def getHeader(self, name):
        value = self.headers.get(name.lower())
        return value.encode("latin-1") if value is not None else None

    def setHeader(self, name, value):
        assert isinstance(name, bytes) and isinstance(value, bytes)

    def setResponseCode(self, code):
        self.code = code

    def getClientAddress(self):
        return SimpleNamespace(host=self.client)


REPORT = BootReport(Clock().seconds)
DEVICES = DeviceResource(MODEL, Images(), None, lambda: "http://10.0.0.1:8080", SCRATCH / "reports.json", Clock())
UI = UiResource(SimpleNamespace(reactor=Clock(), model=MODEL, boot_report=REPORT, images=Images(), diffs=Diffs(),
                                device_resource=DEVICES, kernel_exposures=dict),
                lambda: (LOOPBACK,), lambda: {"services": {}, "directory": {}})
SERVICE = SimpleNamespace(
    image_resource=ImageResource(Images(), Sender(), lambda name: "released"),
    boot_resource=BootFileResource(BOOT_FILES, Sender()),
    diff_resource=DiffResource(Diffs(), Sender()),
    device_resource=DEVICES,
    metrics_resource=SimpleNamespace(render=lambda request: b""),
    ui_resource=UI,
    status=lambda: {},
    boot_status=lambda request, text: HTTPService.boot_status(SimpleNamespace(boot_report=REPORT), request, text))
ROUTER = Router(SERVICE)
PREFIXES = (b"/tftp/", b"/boot/", b"/ipxe/", b"/images/", b"/diffs/", b"/v1/devices/", b"/", b"/ui/",
            b"/ui/device/", b"/ui/devices?q=",
            b"/status/boot/", b"/tftp/pxelinux.cfg/", b"/tftp/sub/", b"/boot/" + IMAGE.encode() + b"/")
CLIENTS = ("10.0.0.57", "127.0.0.1", "10.9.0.5", "::1", "?")


def _check_decision(d, size: int) -> None:
    assert d.status in (200, 206, 304, 416), d
    if d.status == 206 and d.multipart:   # merged, sorted, disjoint ranges inside the file
        assert len(d.parts) >= 2 and all(0 <= a <= b < size for a, b in d.parts), (d, size)
        assert all(d.parts[i][1] + 1 < d.parts[i + 1][0] for i in range(len(d.parts) - 1))
    elif d.status == 206:
        assert 0 <= d.start and d.length >= 1 and d.start + d.length <= size, (d, size)
        assert d.content_range == f"bytes {d.start}-{d.end}/{size}"
    if d.status == 200:
        assert (d.start, d.length) == (0, size)


def _header(fdp: Fdp) -> str | None:
    kind = fdp.byte() % 4
    if kind == 0:
        return None
    text = fdp.bytes(8000).decode("latin-1")     # Twisted accepts header lines up to 16 KiB
    return ("bytes=" + text) if kind == 1 else text


def one_input(data: bytes) -> None:
    fdp = Fdp(data)
    mode = fdp.byte()
    if mode & 1:                                   # the Range logic alone
        size = fdp.int(fdp.byte() % 9)
        rng = _header(fdp) or ""
        result = parse_range(rng, size)
        if isinstance(result, tuple):
            assert 0 <= result[0] <= result[1] < size, (rng, size, result)
        etag = fdp.pick((None, '"abc"', 'W/"abc"'))
        _check_decision(decide(fdp.pick(("GET", "HEAD", "PUT")), size, etag, rng or None,
                               _header(fdp), _header(fdp), fdp.pick((None, "Tue, 1 Jan 2030"))), size)
        return
    method = fdp.pick((b"GET", b"GET", b"HEAD", b"POST"))
    uri = fdp.pick(PREFIXES) + fdp.bytes(120)
    headers = {b"range": _header(fdp), b"if-range": _header(fdp), b"if-none-match": _header(fdp)}
    request = Request(method, uri, {k: v for k, v in headers.items() if v is not None},
                      fdp.pick(CLIENTS))
    result = ROUTER._route(request)
    assert isinstance(result, bytes)
    assert 200 <= request.code < 600
