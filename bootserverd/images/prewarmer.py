"""The prewarmer: brings published images' boot working sets into the page cache, and keeps
count of how much of each image is resident (the I/O side of bootserverd/images/prewarm.py).

- **When**: an image published (also every image at start: the store publishes them then), and
  every image daily at ``images.prewarm.at`` (local time) on the reactor's clock.
- **How**: one job at a time on a dedicated one-thread pool whose thread runs at nice 19 and I/O
  class idle (``residency.lower_priority``: per thread on Linux, hence not the shared pool). A job
  measures what the other images hold, plans (prewarm.plan), reads its ranges in chunks until done,
  ``max_seconds`` or cancelled (the image retired, prewarm disabled, the daemon stopping), then
  measures the image's residency. One log line per job.
- **Residency**: ``mincore`` over every published image every ``residency_interval`` seconds on the
  reactor's thread pool, and after each job; ``/status`` (``status()``) and ``/metrics``
  (``bootserverd_image_resident_bytes``) read the cached figures, never the page cache itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from bootserverd.images import prewarm, residency
from bootserverd.images.squashfs_layout import LayoutError, read_layout
from nbd.trace import SUFFIX, TraceError, parse

log = Logger(namespace="bootserverd.images")
MAX_TRACES = 20                   # newest traces of an image read for its ranges


@dataclass(frozen=True)
class Job:
    """What a job needs, taken on the reactor thread: nothing in it changes under the thread."""
    image: str
    path: Path
    size: int
    why: str                              # "published", "daily at 06:30", ...
    others: tuple[tuple[str, Path], ...]  # the other published images (their residency counts)
    series: tuple[tuple[str, Path], ...]  # every published image, for the previous version
    trace_dir: Path | None
    max_share: float
    deadline_seconds: float
    cancel: threading.Event = field(default_factory=threading.Event, compare=False)


@dataclass(frozen=True)
class Result:
    image: str
    why: str
    how: str
    planned: int                  # bytes planned
    read: int                     # bytes read
    seconds: float
    resident: int                 # bytes of the image resident after
    size: int
    stopped: str = ""             # "" when complete
    note: str = ""
    priority: str = ""
    others_resident: dict = field(default_factory=dict)

    def line(self) -> str:
        mib = 1 << 20
        if self.how == "none":
            return (f"image {self.image} not prewarmed ({self.why}): {self.note}; "
                    f"{self.resident / mib:.1f} of {self.size / mib:.1f} MiB resident")
        state = f", stopped: {self.stopped}" if self.stopped else ""
        note = f"; {self.note}" if self.note else ""
        return (f"image {self.image} prewarmed ({self.why}): {self.how}, {self.read / mib:.1f} of "
                f"{self.planned / mib:.1f} MiB read in {self.seconds:.1f} s{state}; "
                f"{self.resident / mib:.1f} of {self.size / mib:.1f} MiB resident after{note}")

    def as_dict(self, when: float) -> dict:
        return {"why": self.why, "how": self.how, "planned_bytes": self.planned, "read_bytes": self.read,
                "seconds": round(self.seconds, 3), "resident_bytes_after": self.resident,
                "stopped": self.stopped or None, "note": self.note or None, "at": round(when, 3)}


def trace_files(directory: Path | None, image: str) -> list[Path]:
    """The image's trace files, newest first (the writer names them <start>-<host>-<image>.trace)."""
    if directory is None or not directory.is_dir():
        return []
    tail = f"-{image}{SUFFIX}"
    return sorted((p for p in directory.iterdir() if p.name.endswith(tail) and not p.name.startswith(".")),
                  reverse=True)[:MAX_TRACES]


def traced_ranges(directory: Path | None, image: str) -> tuple[list[prewarm.Range], int]:
    """(the READ ranges of the image's newest traces, in first-read order; traces used)."""
    traces = []
    for path in trace_files(directory, image):
        try:
            traces.append(parse(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, TraceError) as exc:
            log.debug("trace {path} not used for prewarm: {err}", path=str(path), err=exc)
    return prewarm.traced_reads(traces, image), len(traces)


def layout_of(path: Path):
    with open(path, "rb", buffering=0) as f:
        return read_layout(lambda offset, size: _pread(f, offset, size)).files


def _pread(f, offset: int, size: int) -> bytes:
    import os
    return os.pread(f.fileno(), size, offset)


def run_job(job: Job, *, mem_total: Callable[[], int] = residency.mem_total,
            resident: Callable[[Path], int] = residency.resident_bytes, warm=residency.warm,
            layout: Callable[[Path], dict] = layout_of, lower: Callable[[], str] = residency.lower_priority,
            clock: Callable[[], float] = time.monotonic) -> Result:
    """Blocking (a thread): plan and warm one image."""
    priority = lower()
    started = clock()
    held = {}
    for name, path in job.others:
        try:
            held[name] = resident(path)
        except OSError:
            held[name] = 0
    room = prewarm.budget(mem_total(), job.max_share, sum(held.values()))
    traced, mapped, note = [], None, ""
    if job.size > room:
        traced, used = traced_ranges(job.trace_dir, job.image)
        if traced:
            note = f"{used} recorded boot{'s' if used != 1 else ''}"
        else:
            previous = prewarm.previous_version(job.image, [n for n, _ in job.series if n != job.image])
            paths = dict(job.series)
            old_reads, used = traced_ranges(job.trace_dir, previous) if previous else ([], 0)
            if old_reads:
                try:
                    result = prewarm.map_by_file(old_reads, layout(paths[previous]), layout(job.path))
                    mapped = (previous, result.ranges)
                    note = (f"{used} recorded boot{'s' if used != 1 else ''} of {previous}, {result.files} files "
                            f"mapped, {result.missing} not in this version")
                except (OSError, LayoutError) as exc:
                    note = f"the ranges of {previous} could not be mapped: {exc}"
    chosen = prewarm.plan(job.image, job.size, room, traced, mapped, note)
    warmed = residency.Warmed()
    if chosen.ranges and not job.cancel.is_set():
        warmed = warm(job.path, chosen.ranges, cancelled=job.cancel.is_set,
                      deadline=started + job.deadline_seconds, clock=clock)
    try:
        after = resident(job.path)
    except OSError:
        after = 0
    return Result(job.image, job.why, chosen.how, chosen.bytes, warmed.bytes, clock() - started, after, job.size,
                  warmed.stopped or ("cancelled" if job.cancel.is_set() else ""), chosen.why, priority, held)


def measure(images: list[tuple[str, Path]], resident: Callable[[Path], int] = residency.resident_bytes) -> dict:
    """Blocking: {image: resident bytes} (images whose file went away are left out)."""
    out = {}
    for name, path in images:
        try:
            out[name] = resident(path)
        except OSError:
            pass
    return out


def _pool_runner(reactor):
    """A dedicated one-thread pool for jobs (its thread is lowered for good), and the runner."""
    from twisted.python.threadpool import ThreadPool
    from twisted.internet.threads import deferToThreadPool
    pool = ThreadPool(minthreads=0, maxthreads=1, name="bootserverd-prewarm")
    return pool, lambda f, *a: deferToThreadPool(reactor, pool, f, *a)


def _shared_runner(reactor):
    from twisted.internet.threads import deferToThreadPool
    return lambda f, *a: deferToThreadPool(reactor, reactor.getThreadPool(), f, *a)


class Prewarmer:
    """Built once by the app; ``start``/``stop`` with the daemon, ``reconfigure`` on SIGHUP.
    ``jobs_runner``/``probe_runner``: how blocking work runs (tests pass synchronous ones)."""

    def __init__(self, config, store, trace_dir: Path | None, reactor, metrics=None,
                 jobs_runner: Callable[..., defer.Deferred] | None = None,
                 probe_runner: Callable[..., defer.Deferred] | None = None,
                 job: Callable[[Job], Result] = run_job, probe: Callable[[list], dict] = measure) -> None:
        self.config, self.store, self.trace_dir, self.reactor, self.metrics = config, store, trace_dir, reactor, metrics
        self._pool = None
        self._run_job, self._run_probe = jobs_runner, probe_runner
        self._job, self._probe = job, probe
        self.resident: dict[str, int] = {}           # image → bytes in the page cache (last measured)
        self.measured_at: float | None = None
        self.last: dict[str, dict] = {}              # image → its last prewarm (Result.as_dict)
        self.queue: list[tuple[str, str]] = []       # (image, why) waiting
        self.current: Job | None = None
        self._known: dict[str, tuple] = {}           # image → stamp seen published
        self._daily = None
        self._loop: LoopingCall | None = None
        self._probing = False
        self._unsubscribe = None
        self._unscrape = None
        self.running = False

    # -- lifecycle --
    def start(self) -> None:
        if self.running:
            return
        self.running = True
        if self._run_job is None:
            self._pool, self._run_job = _pool_runner(self.reactor)
        if self._pool is not None:
            self._pool.start()
        if self._run_probe is None:
            self._run_probe = _shared_runner(self.reactor)
        self._unsubscribe = self.store.subscribe(self._images_changed)
        if self.metrics is not None:
            self._unscrape = self.metrics.before_scrape(self._gauges)
        self._schedule()
        self._images_changed()

    def stop(self) -> None:
        """Cancel the running job (its thread stops after the chunk it reads) and what is queued."""
        if not self.running:
            return
        self.running = False
        for undo in (self._unsubscribe, self._unscrape):
            if undo is not None:
                undo()
        self._unsubscribe = self._unscrape = None
        self._unschedule()
        self.queue.clear()
        if self.current is not None:
            self.current.cancel.set()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None
            self._run_job = None
        if self.metrics is not None:
            self.metrics.image_resident_bytes.clear()

    def reconfigure(self, config, trace_dir: Path | None) -> None:
        old, self.config, self.trace_dir = self.config, config, trace_dir
        if not self.running or old == config:
            return
        self._unschedule()
        if not config.enabled:
            self.queue.clear()
            if self.current is not None:
                self.current.cancel.set()
        self._schedule()

    def _schedule(self) -> None:
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.reactor
        self._loop.start(self.config.residency_interval, now=True)
        if self.config.enabled and self.config.at:
            delay = prewarm.seconds_until(self.reactor.seconds(), prewarm.parse_at(self.config.at))
            self._daily = self.reactor.callLater(delay, self._daily_run)

    def _unschedule(self) -> None:
        if self._daily is not None and self._daily.active():
            self._daily.cancel()
        self._daily = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _daily_run(self) -> None:
        self._daily = None
        for image in self.store.published():
            self.request(image.name, f"daily at {self.config.at}")
        self._daily = self.reactor.callLater(
            prewarm.seconds_until(self.reactor.seconds(), prewarm.parse_at(self.config.at)), self._daily_run)

    def next_daily(self) -> float | None:
        """Epoch seconds of the next daily prewarm, if one is scheduled."""
        return self._daily.getTime() if self._daily is not None and self._daily.active() else None

    # -- what sets it off --
    def _images_changed(self) -> None:
        published = {image.name: image for image in self.store.published()}
        for name in [n for n, stamp in self._known.items()
                     if n not in published or published[n].stamp != stamp]:
            del self._known[name]
            self.resident.pop(name, None)
            self.last.pop(name, None)
            self.queue = [(n, why) for n, why in self.queue if n != name]
            if self.current is not None and self.current.image == name:
                self.current.cancel.set()
        for name, image in published.items():
            if name not in self._known:
                self._known[name] = image.stamp
                self.request(name, "published")

    def request(self, name: str, why: str) -> bool:
        """Queue a prewarm of the published image ``name`` (once: a queued one is not doubled)."""
        if not self.running or not self.config.enabled or self.store.get(name) is None:
            return False
        if any(n == name for n, _ in self.queue):
            return False
        self.queue.append((name, why))
        self._next()
        return True

    def _next(self) -> None:
        while self.current is None and self.queue and self.running:
            name, why = self.queue.pop(0)
            image = self.store.get(name)
            if image is None:
                continue
            published = [(i.name, i.path) for i in self.store.published()]
            job = Job(name, image.path, image.size, why, tuple(p for p in published if p[0] != name),
                      tuple(published), self.trace_dir, self.config.max_share, self.config.max_seconds)
            self.current = job
            d = self._run_job(self._job, job)
            d.addCallbacks(self._job_done, self._job_failed, errbackArgs=(job,))
            d.addBoth(self._job_over, job)

    def _job_done(self, result: Result) -> None:
        log.info("{line}", line=result.line(), image=result.image)
        if self.store.get(result.image) is not None and result.image in self._known:
            self.last[result.image] = result.as_dict(self.reactor.seconds())
            self.resident[result.image] = result.resident
        self.resident.update({n: b for n, b in result.others_resident.items() if n in self._known})

    def _job_failed(self, failure, job: Job) -> None:
        log.warn("image {image} not prewarmed ({why}): {err}", image=job.image, why=job.why,
                 err=failure.getErrorMessage())

    def _job_over(self, _ignored, job: Job) -> None:
        if self.current is job:
            self.current = None
        self._next()

    # -- residency --
    def refresh(self) -> defer.Deferred | None:
        """Measure every published image's residency off the reactor (one measure at a time)."""
        if self._probing or self._run_probe is None:
            return None
        self._probing = True
        images = [(i.name, i.path) for i in self.store.published()]
        d = self._run_probe(self._probe, images)

        def done(found: dict) -> None:
            self.resident = {n: b for n, b in found.items() if n in self._known}
            self.measured_at = self.reactor.seconds()

        def failed(failure) -> None:
            log.warn("image residency not measured: {err}", err=failure.getErrorMessage())

        def over(_):
            self._probing = False
        d.addCallbacks(done, failed)
        d.addBoth(over)
        return d

    def _gauges(self) -> None:
        gauge = self.metrics.image_resident_bytes
        gauge.clear()
        for name, value in self.resident.items():
            gauge.labels(image=name).set(value)

    def status(self) -> dict:
        """The "prewarm" section of /status: per image its size, resident bytes, last prewarm."""
        images = {}
        for image in self.store.published():
            images[image.name] = {"size": image.size, "resident_bytes": self.resident.get(image.name),
                                  "last_prewarm": self.last.get(image.name)}
        next_daily = self.next_daily()
        return {"enabled": self.config.enabled, "at": self.config.at, "max_share": self.config.max_share,
                "next_daily": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(next_daily))
                if next_daily is not None else None,
                "running": self.current.image if self.current is not None else None,
                "queued": [n for n, _ in self.queue],
                "resident_measured_seconds_ago": None if self.measured_at is None
                else round(self.reactor.seconds() - self.measured_at, 1),
                "images": images}
