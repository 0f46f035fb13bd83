"""Image diffs for laptops: librsync deltas (``rdiff``) built on demand, cached on disk.

The reactor side (``DiffCache``) decides whether a pair makes sense, answers "ready",
"building" or "refused", runs at most ``workers`` builders at once as separate niced
processes (never in the reactor), and keeps the cache under a byte budget, evicting the
diffs that serve the fewest devices per byte first.

The builder (``python -m bootserverd.images.diffs build``) runs ``rdiff signature`` + ``rdiff delta``
into a temporary file, hashes it, fsyncs and renames it into place next to a JSON sidecar
with its sha256, so a crash leaves either a complete diff or none.
"""

from __future__ import annotations

import argparse
import errno
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from bootserverd_client.fsutil import fsync_dir

SUFFIX = ".rdiff"
ZSYNC_SUFFIX = ".zsync"
ZSYNC_RATE = 300e6              # bytes of image per second zsyncmake gets through: sets Retry-After
BUILD_RATE = 150e6              # bytes of target image per second a builder gets through (measured
                                # ~190 MB/s on 2 cores, docs/benchmarks.md): sets Retry-After
FAILED_BACKOFF = 300.0          # a pair whose build failed is not retried for this long
EXIT_NO_SPACE = 4               # the builder's exit status when the cache's disk is full


@dataclass(frozen=True)
class Ready:
    path: Path
    sha256: str
    size: int


@dataclass(frozen=True)
class Building:
    retry_after: int


@dataclass(frozen=True)
class Refused:
    code: int                   # 404 senseless pair, 500 build failed, 507 disk full
    reason: str


@dataclass(frozen=True)
class Failure:
    at: float                   # reactor seconds
    why: str
    free: int | None = None     # free bytes in the cache after a build that ran out of space


def pair_problem(source, target) -> str | None:
    """Why a diff from ``source`` to ``target`` (Image or None) makes no sense, or None."""
    if source is None or target is None:
        return "unknown image"
    if source.name == target.name or source.sha256 == target.sha256:
        return "the images are the same"
    if source.series != target.series or source.arch != target.arch:
        return (f"different series or arch ({source.series}/{source.arch} → "
                f"{target.series}/{target.arch})")
    return None


def split_pair(text: str, known: Callable[[str], bool]) -> tuple[str, str] | None:
    """'<from>--<to>' → names; image names may hold '--' themselves, so try every split."""
    pieces = text.split("--")
    candidates = [("--".join(pieces[:i]), "--".join(pieces[i:])) for i in range(1, len(pieces))]
    for source, target in candidates:
        if known(source) and known(target):
            return source, target
    return candidates[0] if len(candidates) == 1 else None


def parse_window(text: str) -> tuple[int, int]:
    """'18:00-07:00' → (1080, 420) minutes of the day; the window may wrap midnight."""
    try:
        start, end = (part.strip() for part in text.split("-"))
        minutes = []
        for part in (start, end):
            hours, minute = part.split(":")
            if not (0 <= int(hours) <= 23 and 0 <= int(minute) <= 59):
                raise ValueError
            minutes.append(int(hours) * 60 + int(minute))
    except ValueError:
        raise ValueError(f"must be a time window like 18:00-07:00, not {text!r}") from None
    return minutes[0], minutes[1]


def in_window(window: tuple[int, int] | None, minute_of_day: int) -> bool:
    if window is None:
        return True
    start, end = window
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end


def cache_name(source_sha: str, target_sha: str, block_size: int) -> str:
    return f"{source_sha[:32]}-{target_sha[:32]}-b{block_size}{SUFFIX}"


def zsync_name(target_sha: str) -> str:
    return f"{target_sha[:32]}{ZSYNC_SUFFIX}"


def eviction_order(entries: Iterable[tuple[str, int, int]]) -> list[str]:
    """entries: (key, size, devices served). Fewest devices per byte first, then oldest key."""
    return [key for key, size, devices in sorted(entries, key=lambda e: (e[2] / max(e[1], 1), e[0]))]


class DiffCache:
    def __init__(self, directory: Path, images, reactor, workers: int = 1, block_size: int = 4096,
                 nice: int = 10, max_bytes: int = 50 << 30,
                 demand: Callable[[], dict[tuple[str, str], int]] = dict,
                 python: str = sys.executable, log=None, metrics=None,
                 free_bytes: Callable[[], int] | None = None):
        from twisted.logger import Logger
        self.directory = Path(directory)
        self.images = images
        self.reactor = reactor
        self.workers = workers
        self.block_size = block_size
        self.nice = nice
        self.max_bytes = max_bytes
        self.demand = demand
        self.python = python
        self.free_bytes = free_bytes or self._statvfs_free   # the cache filesystem's free bytes
        self.log = log or Logger(namespace="bootserverd.diffs")
        self.queue: list[tuple[str, object, object]] = []     # (key, source image, target image)
        self.running: dict[str, object] = {}                  # key → process transport
        self.failed: dict[str, Failure] = {}
        self.built = 0
        self.evicted = 0
        self.stopping = False
        self.metrics = metrics

    # -- lifecycle --
    def start(self) -> None:
        self.stopping = False
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(".*.tmp*"):    # left by a builder killed mid-way
            stale.unlink(missing_ok=True)

    def stop(self) -> None:
        self.stopping = True
        self.queue.clear()
        for transport in list(self.running.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:
                pass

    def status(self) -> dict:
        return {"running": len(self.running), "queued": len(self.queue), "built": self.built,
                "evicted": self.evicted, "failed": len(self.failed), "cached_bytes": self.total_bytes(),
                "max_bytes": self.max_bytes, "block_size": self.block_size}

    # -- lookups --
    def lookup(self, source_name: str, target_name: str) -> Ready | Building | Refused:
        source, target = self.images.get(source_name), self.images.get(target_name)
        problem = pair_problem(source, target)
        if problem is not None:
            return Refused(404, f"no diff from {source_name} to {target_name}: {problem}")
        key = cache_name(source.sha256, target.sha256, self.block_size)
        return self._answer(key, f"building the diff {source_name} → {target_name}", target.size,
                            BUILD_RATE, lambda: self.request(source, target))

    def lookup_zsync(self, name: str) -> Ready | Building | Refused:
        """The zsync control file of a published image (built by the same workers as diffs)."""
        image = self.images.get(name)
        if image is None:
            return Refused(404, f"image {name[:200]!r} is not published")
        key = zsync_name(image.sha256)
        return self._answer(key, f"making the zsync control file of {name}", image.size,
                            ZSYNC_RATE, lambda: self._queue(key, None, image))

    def _answer(self, key: str, what: str, size: int, rate: float, enqueue) -> Ready | Building | Refused:
        """Ready from the cache, refused while a recent failure backs off, or queued now."""
        ready = self._ready(key)
        if ready is not None:
            return ready
        failed = self.backed_off(key)
        if failed is not None:
            return Refused(507 if failed.free is not None else 500, f"{what} failed: {failed.why}")
        enqueue()
        one_build = max(1, round(size / rate))
        return Building(one_build * (1 + len(self.queue) // max(self.workers, 1)))

    def backed_off(self, key: str) -> Failure | None:
        """The failure that keeps ``key`` from being built again now, if any. A build that ran
        out of space is retried as soon as the cache's filesystem has more room than it had
        after that failure (someone freed space); others wait FAILED_BACKOFF."""
        failed = self.failed.get(key)
        if failed is None:
            return None
        if failed.free is not None:
            return failed if self.free_bytes() <= failed.free else None
        return failed if self.reactor.seconds() - failed.at < FAILED_BACKOFF else None

    def _statvfs_free(self) -> int:
        try:
            st = os.statvfs(self.directory)
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def _ready(self, key: str) -> Ready | None:
        path = self.directory / key
        try:
            meta = json.loads((self.directory / (key + ".json")).read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            return None
        if meta.get("size") != size:
            return None
        return Ready(path, meta["sha256"], size)

    def request(self, source, target) -> None:
        """Queue a build (idempotent); used by lookups and by the ahead-of-time planner."""
        self._queue(cache_name(source.sha256, target.sha256, self.block_size), source, target)

    def _queue(self, key: str, source, target) -> None:
        if key in self.running or any(k == key for k, _, _ in self.queue) or self._ready(key):
            return
        if self.backed_off(key) is not None:
            return
        self.queue.append((key, source, target))
        self._next()

    def prebuild(self, pairs: Iterable[tuple[str, str]]) -> int:
        """Queue the diffs devices will ask for; returns how many were queued."""
        queued = 0
        for source_name, target_name in pairs:
            source, target = self.images.get(source_name), self.images.get(target_name)
            if pair_problem(source, target) is None:
                before = len(self.queue) + len(self.running)
                self.request(source, target)
                queued += len(self.queue) + len(self.running) > before
        return queued

    # -- building --
    def _next(self) -> None:
        while self.queue and len(self.running) < self.workers:
            key, source, target = self.queue.pop(0)
            if source is None:                 # a zsync control file; its URL is relative to its own
                args = [self.python, "-m", "bootserverd.images.diffs", "zsync", "--nice", str(self.nice),
                        str(target.path), str(self.directory / key), "--url", f"{target.name}.img"]
            else:
                args = [self.python, "-m", "bootserverd.images.diffs", "build", "--block-size", str(self.block_size),
                        "--nice", str(self.nice), str(source.path), str(target.path), str(self.directory / key),
                        "--from-name", source.name, "--to-name", target.name]
            package_root = str(Path(__file__).resolve().parents[2])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root,
                                                                             os.environ.get("PYTHONPATH")])))
            self.log.info("{what}: building{how}", what=_what(source, target),
                          how=f" (block size {self.block_size})" if source is not None else "")
            started = self.reactor.seconds()
            done = lambda code, errors, key=key, source=source, target=target, started=started: self._ended(
                key, source, target, code, errors, self.reactor.seconds() - started)
            self.running[key] = self.reactor.spawnProcess(_builder_protocol(done), self.python, args, env=env)

    def _ended(self, key: str, source, target, code, errors: str, seconds: float) -> None:
        self.running.pop(key, None)
        if self.stopping:                      # killed by our own shutdown: not a failure
            return
        ready = self._ready(key) if code == 0 else None
        if ready is None:
            why = errors.splitlines()[-1] if errors else f"builder exited with {code}"
            why = why.removeprefix("diff build failed: ")
            self.failed[key] = Failure(self.reactor.seconds(), why,
                                       self.free_bytes() if code == EXIT_NO_SPACE else None)
            if self.metrics is not None:
                self.metrics.diff_builds.labels(outcome="failed").inc()
            self.log.error("{what}: build failed: {why}{where}", what=_what(source, target), why=why,
                           where=f" ({self.directory}; retried once space is freed)" if code == EXIT_NO_SPACE else "")
        else:
            self.built += 1
            if self.metrics is not None:
                self.metrics.diff_builds.labels(outcome="built").inc()
            self.log.info("{what}: built, {size} bytes ({pct:.1f}% of the image) in "
                          "{seconds:.1f} s, sha256 {sha}", what=_what(source, target),
                          size=ready.size, pct=100.0 * ready.size / max(target.size, 1), seconds=seconds,
                          sha=ready.sha256[:16])
            if source is not None:
                self.evict(keep=key)
        self._next()

    # -- the disk budget --
    def entries(self) -> list[tuple[str, int, dict]]:
        out = []
        for meta_path in self.directory.glob(f"*{SUFFIX}.json"):
            key = meta_path.name[:-len(".json")]
            try:
                meta = json.loads(meta_path.read_text())
                out.append((key, (self.directory / key).stat().st_size, meta))
            except (OSError, ValueError):
                continue
        return out

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, keep: str | None = None) -> list[str]:
        """Delete diffs until the cache fits its budget. ``keep`` (the diff just built) is
        spared this round: evicting it would make the client that asked for it rebuild it
        forever; the cache may exceed its budget by that one diff until the next build."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        if total <= self.max_bytes:
            return []
        demand = self.demand()
        served = {key: demand.get((meta.get("from"), meta.get("to")), 0) for key, _, meta in entries}
        sizes = {key: size for key, size, _ in entries}
        gone = []
        for key in eviction_order((key, sizes[key], served[key]) for key in sizes if key != keep):
            if total <= self.max_bytes:
                break
            (self.directory / (key + ".json")).unlink(missing_ok=True)
            (self.directory / key).unlink(missing_ok=True)   # open downloads keep their descriptor
            total -= sizes[key]
            gone.append(key)
            self.evicted += 1
            if self.metrics is not None:
                self.metrics.diff_evictions.inc()
            self.log.info("diff cache over budget: evicted {key} ({size} bytes, {n} devices)",
                          key=key, size=sizes[key], n=served[key])
        return gone


def _what(source, target) -> str:
    if source is None:
        return f"zsync control file of {target.name}"
    return f"diff {source.name} → {target.name}"


def _builder_protocol(done: Callable[[int | None, str], None]):
    """A ProcessProtocol that keeps the builder's last stderr lines and reports its exit."""
    from twisted.internet.protocol import ProcessProtocol

    class Builder(ProcessProtocol):
        errors = b""

        def errReceived(self, data: bytes) -> None:
            self.errors = (self.errors + data)[-2000:]

        def processEnded(self, reason) -> None:
            done(getattr(reason.value, "exitCode", None), self.errors.decode(errors="replace").strip())

    return Builder()


# -- the builder process --------------------------------------------------------------------
def _run(label: str, command: list[str], directory: Path) -> None:
    run = subprocess.run(command, capture_output=True, text=True)
    if run.returncode != 0:
        if "No space left" in run.stderr:
            raise OSError(errno.ENOSPC, f"{label}: No space left on device", str(directory))
        # librsync writes several lines; the log wants one
        lines = "; ".join(line.strip() for line in run.stderr.splitlines() if line.strip())
        raise RuntimeError(f"{label}: {lines or run.returncode}")


def _publish(produced: Path, out: Path, info: dict, started: float) -> dict:
    """Hash and fsync ``produced`` (in a temporary directory next to ``out``), then rename it
    into place and after it the JSON sidecar naming its sha256 and size."""
    digest = hashlib.sha256()
    with open(produced, "rb+") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
        os.fsync(f.fileno())
    info = dict(info, sha256=digest.hexdigest(), size=produced.stat().st_size,
                seconds=round(time.monotonic() - started, 3), nice=os.nice(0))
    sidecar = produced.with_name("meta.json")
    with open(sidecar, "w") as f:
        json.dump(info, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(produced, out)                        # the file first, then the sidecar naming it
    os.replace(sidecar, out.with_name(out.name + ".json"))
    fsync_dir(out.parent)
    return info


def build(source: Path, target: Path, out: Path, block_size: int, meta: dict | None = None) -> dict:
    """Blocking: write ``out`` (delta) and ``out.json`` (sha256, size, ...) atomically."""
    started = time.monotonic()
    directory = out.parent
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp", dir=directory) as tmp:
        signature, delta = Path(tmp) / "signature", Path(tmp) / "delta"
        _run("rdiff signature", ["rdiff", "--block-size", str(block_size), "signature", str(source),
                                 str(signature)], directory)
        _run("rdiff delta", ["rdiff", "--block-size", str(block_size), "delta", str(signature), str(target),
                             str(delta)], directory)
        return _publish(delta, out, dict(meta or {}, block_size=block_size), started)


def build_zsync(image: Path, out: Path, url: str) -> dict:
    """Blocking: the zsync control file of ``image`` (``zsyncmake``; ``url`` relative to the
    control file's own URL), atomically like a diff."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.tmp", dir=out.parent) as tmp:
        control = Path(tmp) / "control"
        _run("zsyncmake", ["zsyncmake", "-Z", "-u", url, "-f", url, "-o", str(control), str(image)], out.parent)
        return _publish(control, out, {"image": url}, started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bootserverd.images.diffs")
    commands = parser.add_subparsers(dest="command", required=True)
    sub = commands.add_parser("build", help="build one delta (run by the daemon)")
    sub.add_argument("source", type=Path)
    sub.add_argument("target", type=Path)
    sub.add_argument("out", type=Path)
    sub.add_argument("--block-size", type=int, default=4096)
    sub.add_argument("--nice", type=int, default=10)
    sub.add_argument("--from-name")
    sub.add_argument("--to-name")
    sub = commands.add_parser("zsync", help="make one zsync control file (run by the daemon)")
    sub.add_argument("image", type=Path)
    sub.add_argument("out", type=Path)
    sub.add_argument("--url", required=True)
    sub.add_argument("--nice", type=int, default=10)
    args = parser.parse_args(argv)
    os.nice(args.nice)
    try:
        if args.command == "zsync":
            build_zsync(args.image, args.out, args.url)
        else:
            build(args.source, args.target, args.out, args.block_size,
                  {"from": args.from_name, "to": args.to_name})
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            print("diff build failed: no space left on device in the diff cache (nothing written)",
                  file=sys.stderr)
            return EXIT_NO_SPACE
        print(f"diff build failed: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"diff build failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
