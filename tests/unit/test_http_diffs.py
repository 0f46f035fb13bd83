"""bootserverd.images.diffs: which pairs make sense, names, eviction order, the builder, the budget."""
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bootserverd.images.diffs import DiffCache, build, cache_name, eviction_order, pair_problem, split_pair


@dataclass
class Img:
    name: str
    sha256: str
    series: str | None = "s"
    arch: str | None = "amd64"
    size: int = 100
    path: Path = Path("/nonexistent")


def test_pair_problem():
    a, b = Img("s-1-amd64", "a" * 64), Img("s-2-amd64", "b" * 64)
    assert pair_problem(a, b) is None
    assert pair_problem(b, a) is None                       # downgrade diffs serve rollbacks
    assert pair_problem(None, b) == "unknown image"
    assert "same" in pair_problem(a, a)
    assert "same" in pair_problem(a, Img("copy", "a" * 64))
    assert "series" in pair_problem(a, Img("t-2-amd64", "c" * 64, series="t"))
    assert "arch" in pair_problem(a, Img("s-2-i386", "c" * 64, arch="i386"))


def test_split_pair():
    known = {"a", "b--c", "d"}.__contains__
    assert split_pair("a--d", known) == ("a", "d")
    assert split_pair("a--b--c", known) == ("a", "b--c")
    assert split_pair("x--y", known) == ("x", "y")            # unknown, but unambiguous: lookup says why
    assert split_pair("x--y--z", known) is None
    assert split_pair("nodash", known) is None


def test_cache_name_depends_on_content_and_block_size():
    assert cache_name("a" * 64, "b" * 64, 4096) != cache_name("a" * 64, "b" * 64, 128)
    assert cache_name("a" * 64, "b" * 64, 4096) != cache_name("b" * 64, "a" * 64, 4096)
    assert "/" not in cache_name("a" * 64, "b" * 64, 4096)


def test_eviction_order_fewest_devices_per_byte_first():
    entries = [("big-popular", 1000, 50), ("small-unused", 10, 0), ("big-rare", 1000, 1), ("small-used", 10, 5)]
    assert eviction_order(entries) == ["small-unused", "big-rare", "big-popular", "small-used"]


def test_builder_output_patches_to_the_new_file(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    data = bytes(range(256)) * 4096
    old.write_bytes(data)
    new.write_bytes(data[:300000] + b"changed" + data[300000:])
    out = tmp_path / "cache" / "x.rdiff"
    out.parent.mkdir()
    info = build(old, new, out, 4096, {"from": "old", "to": "new"})
    assert json.loads((tmp_path / "cache" / "x.rdiff.json").read_text()) == info
    assert info["size"] == out.stat().st_size < 50000
    patched = tmp_path / "patched"
    subprocess.run(["rdiff", "patch", str(old), str(out), str(patched)], check=True)
    assert patched.read_bytes() == new.read_bytes()
    assert [p.name for p in out.parent.iterdir()] and not list(out.parent.glob(".*"))   # no temp left


class _Clock:
    def seconds(self):
        return 0.0


def test_budget_evicts_least_useful(tmp_path):
    cache = DiffCache(tmp_path, images=None, reactor=_Clock(), max_bytes=3 << 20,
                      demand=lambda: {("a", "b"): 10, ("c", "d"): 0, ("e", "f"): 3})
    for key, pair in (("k1.rdiff", ("a", "b")), ("k2.rdiff", ("c", "d")), ("k3.rdiff", ("e", "f"))):
        (tmp_path / key).write_bytes(b"x" * (3 << 19))
        (tmp_path / (key + ".json")).write_text(json.dumps({"from": pair[0], "to": pair[1], "sha256": "0",
                                                             "size": 3 << 19}))
    assert cache.evict() == ["k2.rdiff"]
    assert sorted(p.name for p in tmp_path.glob("*.rdiff")) == ["k1.rdiff", "k3.rdiff"]
    assert cache.evict() == []


def test_prebuild_window():
    import pytest
    from bootserverd.images.diffs import in_window, parse_window
    night = parse_window("18:00-07:00")
    assert night == (1080, 420)
    assert in_window(night, 23 * 60) and in_window(night, 6 * 60 + 59) and not in_window(night, 7 * 60)
    assert not in_window(night, 12 * 60)
    lunch = parse_window("11:30-12:30")
    assert in_window(lunch, 12 * 60) and not in_window(lunch, 13 * 60)
    assert in_window(None, 0)
    for bad in ("18-7", "25:00-01:00", "xx", "10:00"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_budget_spares_the_diff_just_built(tmp_path):
    # The least useful diff is the one just built: evicting it would send its client into a
    # build → evict → rebuild loop. It stays; the others go in order until the cache fits.
    cache = DiffCache(tmp_path, images=None, reactor=_Clock(), max_bytes=1 << 20,
                      demand=lambda: {("a", "b"): 10, ("c", "d"): 5, ("e", "f"): 0})
    for key, pair in (("k1.rdiff", ("a", "b")), ("k2.rdiff", ("c", "d")), ("new.rdiff", ("e", "f"))):
        (tmp_path / key).write_bytes(b"x" * (3 << 19))
        (tmp_path / (key + ".json")).write_text(json.dumps({"from": pair[0], "to": pair[1], "sha256": "0",
                                                             "size": 3 << 19}))
    assert cache.evict(keep="new.rdiff") == ["k2.rdiff", "k1.rdiff"]
    assert [p.name for p in tmp_path.glob("*.rdiff")] == ["new.rdiff"]
    assert cache.evict() == ["new.rdiff"]           # the next round may take it


def test_a_build_that_ran_out_of_space_is_retried_once_space_is_freed(tmp_path):
    from bootserverd.images.diffs import FAILED_BACKOFF, Failure
    clock = _Clock()
    free = [1000]                                       # the filesystem's free bytes, as the test says
    cache = DiffCache(tmp_path, images=None, reactor=clock, free_bytes=lambda: free[0])
    cache.failed["k"] = Failure(0.0, "no space left on device", free=1000)
    cache.failed["other"] = Failure(0.0, "rdiff delta: bad input")
    assert cache.backed_off("k") is not None           # nothing freed: no pointless rebuild
    free[0] = 900
    assert cache.backed_off("k") is not None
    free[0] = 5000                                       # someone made room: try again now
    assert cache.backed_off("k") is None
    assert cache.backed_off("other") is not None       # other failures wait the backoff
    clock.seconds = lambda: FAILED_BACKOFF + 1
    assert cache.backed_off("other") is None
