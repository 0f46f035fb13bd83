"""The image store: squashfs files in ``images.dir``, published and retired while running.

A file is published once it has settled (not written to for ``settle_seconds``), is a
squashfs, has been hashed and its kernel and initrd have been copied out of it into a
cache keyed by sha256. Hashes are cached by (device, inode, size, mtime) so a restart
does not re-read gigabytes. Removing a file retires it; open descriptors (NBD clients)
keep reading the old bytes. Indexing runs off the reactor thread, one image at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

from twisted.internet import defer
from twisted.logger import Logger

from bootserverd.images import signature, squashfs
from bootserverd_client.fsutil import fsync_dir, sha256_file, write_atomically
from bootserverd.model.objects import SAFE_IMAGE_NAME, parse_image_name

log = Logger(namespace="bootserverd.images")


@dataclass(frozen=True)
class Image:
    name: str
    path: Path
    size: int
    sha256: str
    series: str | None
    version: str | None
    arch: str | None
    kernel: Path          # extracted copy of the image's kernel (cache, keyed by sha256)
    initrd: Path
    kernel_source: str    # where the kernel is inside the image, e.g. /boot/vmlinuz-6.1.0-18-amd64
    stamp: tuple          # (st_dev, st_ino, size, mtime_ns): identity of the file version
    # every /boot/vmlinuz-<v> with its initrd.img-<v>: version → extracted (kernel, initrd)
    kernels: Mapping[str, tuple[Path, Path]] = field(default_factory=dict, hash=False)
    default_kernel_version: str | None = None   # the version of ``kernel`` when it is one of ``kernels``
    # each kernel (its version; an unversioned default by its path inside the image) → whether it
    # has a Secure Boot signature (bootserverd.images.signature: present, not verified)
    kernel_signed: Mapping[str, bool] = field(default_factory=dict, hash=False)

    def summary(self) -> dict:
        return {"name": self.name, "series": self.series, "version": self.version, "arch": self.arch,
                "size": self.size, "sha256": self.sha256,
                "kernels": sorted(self.kernels, key=squashfs.version_key),
                "default_kernel": self.default_kernel_version, "kernel_signed": dict(self.kernel_signed)}


def file_stamp(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class HashCache:
    """sha256 per file version, persisted in state_dir."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._entries: dict[str, str] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    @staticmethod
    def _key(stamp: tuple) -> str:
        return ":".join(map(str, stamp))

    def get(self, stamp: tuple) -> str | None:
        return self._entries.get(self._key(stamp))

    def put(self, stamp: tuple, sha256: str, keep: set[tuple]) -> None:
        self._entries = {k: v for k, v in self._entries.items()
                         if k in {self._key(s) for s in keep}}
        self._entries[self._key(stamp)] = sha256
        write_atomically(self.path, json.dumps(self._entries, indent=0).encode())


class ImageIndexError(Exception):
    pass


def index_image(path: Path, stamp: tuple, hashes: HashCache, boot_cache: Path, keep: set[tuple]) -> Image:
    """Blocking: hash (or take the cached hash), find and extract every kernel + initrd."""
    name = path.name[:-len(".img")]
    if not squashfs.is_squashfs(path):
        raise ImageIndexError("not a squashfs image")
    sha = hashes.get(stamp)
    if sha is None:
        sha = sha256_file(path)
        hashes.put(stamp, sha, keep | {stamp})
    try:
        found = squashfs.find_kernels(path)
    except squashfs.SquashfsError as exc:
        raise ImageIndexError(str(exc)) from None
    target = boot_cache / sha
    # cache file name → path inside the image; names come from KERNEL_VERSION-checked versions
    wanted = {"vmlinuz": found.default[0], "initrd.img": found.default[1]}
    for version, (kernel_source, initrd_source) in found.versions.items():
        wanted[f"vmlinuz-{version}"], wanted[f"initrd.img-{version}"] = kernel_source, initrd_source
    if not all((target / leaf).is_file() for leaf in wanted):
        _extract_into(path, found, wanted, target)
    kernels = MappingProxyType({version: (target / f"vmlinuz-{version}", target / f"initrd.img-{version}")
                                for version in found.versions})
    copies = {version: target / f"vmlinuz-{version}" for version in sorted(found.versions, key=squashfs.version_key)}
    if found.default_version is None:
        copies[found.default[0]] = target / "vmlinuz"
    series, version, arch = parse_image_name(name)
    return Image(name=name, path=path, size=stamp[2], sha256=sha, series=series, version=version,
                 arch=arch, kernel=target / "vmlinuz", initrd=target / "initrd.img",
                 kernel_source=found.default[0], stamp=stamp, kernels=kernels,
                 default_kernel_version=found.default_version,
                 kernel_signed=MappingProxyType({label: has_signature(copy) for label, copy in copies.items()}))


def has_signature(kernel: Path) -> bool:
    """Blocking: whether the extracted kernel has a Secure Boot signature; only its PE headers
    and certificate table are read (pread), not the whole file again."""
    fd = os.open(kernel, os.O_RDONLY)
    try:
        return signature.inspect(lambda offset, size: os.pread(fd, size, offset)) == signature.SIGNED
    finally:
        os.close(fd)


def _extract_into(image: Path, found: squashfs.BootKernels, wanted: dict[str, str], target: Path) -> None:
    """One unsquashfs run for all files into a scratch directory, each fsynced, then linked into
    place under its cache name (the default pair shares the inode of its versioned pair)."""
    target.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".extract.", dir=target))
    try:
        tree = scratch / "tree"
        squashfs.extract(image, found.sources(), tree, found.sizes)
        for source in found.sources():
            fd = os.open(tree / source.lstrip("/"), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        for leaf, source in wanted.items():
            link = scratch / leaf
            os.link(tree / source.lstrip("/"), link)
            os.replace(link, target / leaf)
        fsync_dir(target)
    except squashfs.SquashfsError as exc:
        raise ImageIndexError(str(exc)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _deferred_to_thread(function, *args):
    from twisted.internet.threads import deferToThread
    return deferToThread(function, *args)


class ImageStore:
    def __init__(self, directory: Path, state_dir: Path, clock, settle_seconds: float = 2.0,
                 rescan_interval: float = 60.0,
                 run_blocking: Callable[..., defer.Deferred] = _deferred_to_thread):
        self.directory = directory
        self.boot_cache = state_dir / "boot"
        self.hashes = HashCache(state_dir / "image-hashes.json")
        self._clock = clock
        self.settle_seconds = settle_seconds
        self.rescan_interval = rescan_interval
        self._run_blocking = run_blocking
        self._images: dict[str, Image] = {}
        self._rejected: dict[str, tuple] = {}   # name → stamp logged as bad (log once per version)
        self._subscribers: list[Callable[[], None]] = []
        self._scan_call = None
        self._periodic = None
        self._scanning: defer.Deferred | None = None
        self._again = False
        self._notifier = None

    # -- the interface the services use --
    def get(self, name: str) -> Image | None:
        return self._images.get(name)

    def published(self) -> list[Image]:
        return [self._images[name] for name in sorted(self._images)]

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """callback() after every change of the published set; returns the unsubscribe."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def reconfigure(self, directory: Path, state_dir: Path, settle_seconds: float,
                    rescan_interval: float) -> defer.Deferred:
        """Apply images.* and server.state_dir in place (SIGHUP): whoever holds this store (NBD,
        HTTP, the diff cache, the model) sees the new directory's images after the rescan;
        images only the old directory had are retired, open NBD sessions keep their files."""
        self.settle_seconds = settle_seconds
        if (directory, state_dir / "boot", rescan_interval) == (self.directory, self.boot_cache,
                                                                 self.rescan_interval):
            return defer.succeed(None)
        running = self._periodic is not None
        self.stop()
        self.directory, self.rescan_interval = directory, rescan_interval
        self.boot_cache = state_dir / "boot"
        self.hashes = HashCache(state_dir / "image-hashes.json")
        self._rejected.clear()
        log.info("image directory is now {dir}", dir=str(directory))
        return self.start() if running else defer.succeed(None)

    # -- lifecycle --
    def start(self) -> defer.Deferred:
        self.boot_cache.mkdir(parents=True, exist_ok=True)
        self._watch()
        self._schedule_periodic()
        return self.rescan()

    def stop(self) -> None:
        for call in (self._scan_call, self._periodic):
            if call is not None and call.active():
                call.cancel()
        self._scan_call = self._periodic = None
        if self._notifier is not None:
            self._notifier.loseConnection()
            self._notifier = None

    def _watch(self) -> None:
        """inotify where the reactor has it; the periodic rescan covers the rest."""
        try:
            from twisted.internet import inotify
            from twisted.python import filepath
            notifier = inotify.INotify()
            notifier.startReading()
            mask = (inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_TO | inotify.IN_MOVED_FROM
                    | inotify.IN_DELETE | inotify.IN_CREATE | inotify.IN_ATTRIB)
            notifier.watch(filepath.FilePath(str(self.directory)), mask=mask,
                           callbacks=[lambda *_: self.rescan_soon(0.2)])
            self._notifier = notifier
        except Exception as exc:  # not Linux, no inotify, or out of watches
            log.info("no inotify on {dir} ({err}); rescanning every {n:.0f} s",
                     dir=str(self.directory), err=exc, n=self.rescan_interval)

    def _schedule_periodic(self) -> None:
        def tick():
            self._periodic = self._clock.callLater(self.rescan_interval, tick)
            self.rescan()
        self._periodic = self._clock.callLater(self.rescan_interval, tick)

    def rescan_soon(self, delay: float) -> None:
        if self._scan_call is not None and self._scan_call.active():
            return
        self._scan_call = self._clock.callLater(delay, self.rescan)

    def rescan(self) -> defer.Deferred:
        """Compare the directory with what is published; index what is new. Serialised."""
        if self._scanning is not None:
            self._again = True
            return self._scanning
        self._scanning = defer.ensureDeferred(self._scan())

        def done(result):
            self._scanning = None
            if self._again:
                self._again = False
                return self.rescan()
            return result
        self._scanning.addBoth(done)
        return self._scanning

    async def _scan(self) -> None:
        found = self._candidates()
        now_ns = int(self._clock.seconds() * 1e9)
        changed = False
        for name in [n for n, image in self._images.items() if found.get(n) != (image.path, image.stamp)]:
            image = self._images.pop(name)
            changed = True
            why = "removed" if name not in found else "replaced by a new file"
            log.info("image {name} retired ({why})", name=name, why=why)
        keep = {stamp for _, stamp in found.values()}
        unsettled = False
        for name, (path, stamp) in sorted(found.items()):
            if name in self._images or self._rejected.get(name) == stamp:
                continue
            age = (now_ns - stamp[3]) / 1e9
            if age < self.settle_seconds:
                unsettled = True
                continue
            try:
                image = await self._run_blocking(index_image, path, stamp, self.hashes, self.boot_cache, keep)
            except (ImageIndexError, OSError) as exc:
                self._rejected[name] = stamp
                log.warn("image file {path} skipped: {err}", path=str(path), err=exc)
                continue
            if not self._still_same(path, stamp):
                unsettled = True
                continue
            self._images[name] = image
            changed = True
            log.info("image {name} published ({size} bytes, sha256 {sha}, kernel {kernel}, kernels: {versions})",
                     name=name, size=image.size, sha=image.sha256[:16], kernel=image.kernel_source,
                     versions=squashfs.describe_versions(image.kernels, image.default_kernel_version))
        self._rejected = {n: s for n, s in self._rejected.items() if n in found}
        if unsettled:
            self.rescan_soon(max(self.settle_seconds, 0.2))
        if changed:
            self._prune_boot_cache()
            for callback in list(self._subscribers):
                callback()

    def _candidates(self) -> dict[str, tuple[Path, tuple]]:
        found = {}
        try:
            names = os.listdir(self.directory)
        except OSError as exc:
            log.error("cannot read image directory {dir}: {err}", dir=str(self.directory), err=exc)
            return {n: (i.path, i.stamp) for n, i in self._images.items()}
        for filename in names:
            if not filename.endswith(".img") or filename.startswith("."):
                continue
            name = filename[:-4]
            path = self.directory / filename
            try:
                st = path.stat()
            except OSError:
                continue
            if not SAFE_IMAGE_NAME.match(name) or not path.is_file():
                if self._rejected.get(name) != ():
                    log.warn("image file {path} skipped: not a safe image name", path=str(path))
                    self._rejected[name] = ()
                continue
            found[name] = (path, file_stamp(st))
        return found

    @staticmethod
    def _still_same(path: Path, stamp: tuple) -> bool:
        try:
            return file_stamp(path.stat()) == stamp
        except OSError:
            return False

    def _prune_boot_cache(self) -> None:
        wanted = {image.sha256 for image in self._images.values()}
        try:
            entries = list(self.boot_cache.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_dir() and entry.name not in wanted:
                shutil.rmtree(entry, ignore_errors=True)  # open descriptors keep their data


def scan_summary(directory: Path) -> list[tuple[str, int, str]]:
    """For check-config: (name, size, problem or '') per *.img file, without hashing."""
    out = []
    for path in sorted(directory.glob("*.img")):
        name = path.name[:-4]
        problem = ""
        if not SAFE_IMAGE_NAME.match(name):
            problem = "not a safe image name"
        elif not squashfs.is_squashfs(path):
            problem = "not a squashfs image"
        else:
            try:
                squashfs.find_boot_files(path)
            except squashfs.SquashfsError as exc:
                problem = str(exc)
        out.append((name, path.stat().st_size if path.exists() else 0, problem))
    return out
