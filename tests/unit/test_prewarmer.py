"""The prewarmer's scheduling on an injected clock (twisted.internet.task.Clock): prewarm on
publish, daily at images.prewarm.at local time, one job at a time, cancel on retire and stop,
residency cached for /status and /metrics. Blocking work runs synchronously here."""

import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from bootserverd.config.settings import PrewarmConfig
from bootserverd.images.prewarmer import Prewarmer, Result
from bootserverd.ops.metrics import Metrics


@dataclass(frozen=True)
class Img:
    name: str
    size: int = 1000
    path: Path = Path("/nonexistent")
    stamp: tuple = (1,)


@dataclass
class Store:
    images: dict = field(default_factory=dict)
    subscribers: list = field(default_factory=list)

    def get(self, name):
        return self.images.get(name)

    def published(self):
        return [self.images[n] for n in sorted(self.images)]

    def subscribe(self, callback):
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def publish(self, *images):
        self.images.update({i.name: i for i in images})
        for callback in list(self.subscribers):
            callback()

    def retire(self, name):
        del self.images[name]
        for callback in list(self.subscribers):
            callback()


@pytest.fixture
def local_tz(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Helsinki")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


class Rig:
    def __init__(self, config=PrewarmConfig(at="07:15"), start=None, hold=False):
        self.clock = Clock()
        if start is not None:
            self.clock.advance(start)
        self.store = Store()
        self.jobs = []             # (job, deferred) in the order started
        self.hold = hold           # jobs wait until finish() (else finish at once)
        self.probes = 0
        self.metrics = Metrics()
        self.prewarmer = Prewarmer(config, self.store, None, self.clock, metrics=self.metrics,
                                   jobs_runner=self._run_job, probe_runner=self._run_probe)

    def _run_job(self, function, job):
        d = defer.Deferred()
        self.jobs.append((job, d))
        if not self.hold:
            self.finish(job)
        return d

    def finish(self, job, resident=None):
        for j, d in self.jobs:
            if j is job and not d.called:
                stopped = "cancelled" if job.cancel.is_set() else ""
                d.callback(Result(job.image, job.why, "whole", job.size, job.size, 0.5,
                                  job.size if resident is None else resident, job.size, stopped))

    def _run_probe(self, function, images):
        self.probes += 1
        return defer.succeed({name: 42 for name, _ in images})


def test_each_published_image_is_prewarmed_once_one_job_at_a_time():
    rig = Rig(hold=True)
    rig.prewarmer.start()
    rig.store.publish(Img("a"), Img("b"))
    assert [j.image for j, _ in rig.jobs] == ["a"]          # b waits for a
    assert rig.prewarmer.status()["queued"] == ["b"]
    rig.finish(rig.jobs[0][0])
    assert [(j.image, j.why) for j, _ in rig.jobs] == [("a", "published"), ("b", "published")]
    assert [n for n, _ in rig.jobs[1][0].others] == ["a"]    # what the others hold counts
    rig.finish(rig.jobs[1][0])
    rig.store.publish()                                     # nothing new: nothing to do
    assert len(rig.jobs) == 2
    status = rig.prewarmer.status()
    assert status["images"]["a"]["resident_bytes"] == 1000
    assert status["images"]["b"]["last_prewarm"]["how"] == "whole"


def test_the_daily_prewarm_runs_at_the_configured_local_time(local_tz):
    six = time.mktime((2026, 12, 2, 6, 0, 0, 0, 0, -1))
    rig = Rig(start=six)
    rig.prewarmer.start()
    rig.store.publish(Img("a"), Img("b"))
    assert len(rig.jobs) == 2
    assert rig.prewarmer.next_daily() == six + 75 * 60
    rig.clock.advance(75 * 60 - 1)
    assert len(rig.jobs) == 2
    rig.clock.advance(1)                                    # 07:15 local
    assert [(j.image, j.why) for j, _ in rig.jobs[2:]] == [("a", "daily at 07:15"), ("b", "daily at 07:15")]
    assert rig.prewarmer.next_daily() == six + 75 * 60 + 86400
    rig.clock.advance(86400)
    assert len(rig.jobs) == 6
    assert rig.prewarmer.status()["next_daily"].startswith("2026-12-04T07:15:00")


def test_a_sighup_moves_the_daily_time_and_disabling_stops_it(local_tz):
    six = time.mktime((2026, 12, 2, 6, 0, 0, 0, 0, -1))
    rig = Rig(start=six)
    rig.prewarmer.start()
    rig.prewarmer.reconfigure(PrewarmConfig(at="06:30"), None)
    assert rig.prewarmer.next_daily() == six + 30 * 60
    rig.prewarmer.reconfigure(PrewarmConfig(enabled=False, at="06:30"), None)
    assert rig.prewarmer.next_daily() is None
    rig.store.publish(Img("a"))
    assert rig.jobs == []
    rig.prewarmer.reconfigure(PrewarmConfig(at=None), None)
    assert rig.prewarmer.next_daily() is None


def test_retiring_the_image_cancels_its_running_and_queued_prewarm():
    rig = Rig(hold=True)
    rig.prewarmer.start()
    rig.store.publish(Img("a"), Img("b"), Img("c"))
    job_a = rig.jobs[0][0]
    rig.store.retire("b")                                   # queued: dropped
    rig.store.retire("a")                                   # running: cancelled
    assert job_a.cancel.is_set()
    rig.finish(job_a)
    assert [j.image for j, _ in rig.jobs] == ["a", "c"]
    assert "a" not in rig.prewarmer.status()["images"] and "a" not in rig.prewarmer.resident


def test_a_new_file_under_the_same_name_is_prewarmed_again():
    rig = Rig()
    rig.prewarmer.start()
    rig.store.publish(Img("a"))
    rig.store.publish(Img("a", stamp=(2,)))
    assert [j.image for j, _ in rig.jobs] == ["a", "a"]


def test_stopping_cancels_the_running_job_and_forgets_the_queue():
    rig = Rig(hold=True)
    rig.prewarmer.start()
    rig.store.publish(Img("a"), Img("b"))
    rig.prewarmer.stop()
    assert rig.jobs[0][0].cancel.is_set()
    assert rig.prewarmer.queue == []
    rig.finish(rig.jobs[0][0])
    assert len(rig.jobs) == 1
    assert rig.store.subscribers == []
    assert rig.prewarmer.next_daily() is None


def test_residency_is_measured_every_interval_and_read_from_the_cache_by_metrics():
    rig = Rig(config=PrewarmConfig(at=None, residency_interval=30))
    rig.prewarmer.start()
    assert rig.probes == 1
    rig.store.publish(Img("a"))
    rig.clock.advance(30)
    assert rig.probes == 2
    assert rig.prewarmer.resident == {"a": 42}
    text = rig.metrics.render().decode()
    assert 'bootserverd_image_resident_bytes{image="a"} 42.0' in text
    assert rig.probes == 2                                  # a scrape does not measure
    rig.store.retire("a")
    assert "bootserverd_image_resident_bytes{" not in rig.metrics.render().decode()
