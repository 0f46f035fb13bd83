"""Prewarm planning (bootserverd/images/prewarm.py): ranges, budget, plan, series, mapping by
file, the daily time; and the squashfs layout reader against real mksquashfs images."""

import os
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from bootserverd.images import prewarm as p
from bootserverd.images.squashfs_layout import LayoutError, read_layout
from nbd.trace import parse

MiB = 1 << 20


# -- ranges --
def test_merge_joins_overlapping_and_touching_ranges_and_drops_empty_ones():
    assert p.merge([(10, 5), (0, 10), (20, 0), (30, 5), (33, 10)]) == [(0, 15), (30, 13)]


def test_align_widens_to_pages_and_clips_to_the_image():
    assert p.align([(100, 10), (5000, 10)], size=10_000) == [(0, 8192)]
    assert p.align([(9000, 5000)], size=10_000) == [(8192, 1808)]
    assert p.align([(20_000, 10)], size=10_000) == []


@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 1 << 16)), max_size=40))
def test_merge_covers_exactly_the_union(ranges):
    merged = p.merge(ranges)
    covered = set()
    for offset, length in ranges:
        covered.update(range(offset // 512, (offset + length + 511) // 512) if length else ())
    assert all(a[0] + a[1] < b[0] for a, b in zip(merged, merged[1:]))   # sorted, disjoint, not touching
    assert sum(length for _, length in merged) == p.total(ranges)


def test_first_bytes_keeps_the_first_read_ranges_within_the_budget():
    ordered = [(10 * MiB, MiB), (0, MiB), (50 * MiB, 4 * MiB), (1 * MiB, MiB)]
    assert p.first_bytes(ordered, 2 * MiB, 100 * MiB) == [(0, MiB), (10 * MiB, MiB)]
    assert p.total(p.first_bytes(ordered, 100 * MiB, 100 * MiB)) == 7 * MiB
    assert p.first_bytes(ordered, 0, 100 * MiB) == []
    assert p.first_bytes(ordered, 5 * MiB // 2, 100 * MiB) == [(0, MiB), (10 * MiB, MiB), (50 * MiB, MiB // 2)]


# -- the plan --
def test_budget_counts_what_other_images_hold():
    assert p.budget(8 << 30, 0.5, 1 << 30) == 3 << 30
    assert p.budget(8 << 30, 0.5, 5 << 30) == 0


def test_a_small_image_is_prewarmed_whole():
    plan = p.plan("img", 100 * MiB, 200 * MiB, traced=[(0, 4096)])
    assert (plan.how, plan.ranges, plan.bytes) == ("whole", ((0, 100 * MiB),), 100 * MiB)


def test_a_large_image_gets_its_traced_ranges_cut_at_the_budget():
    plan = p.plan("img", 4096 * MiB, 5 * MiB // 2, traced=[(0, MiB), (100 * MiB, MiB), (5000, 10), (200 * MiB, MiB)])
    assert plan.how == "traced"
    assert plan.ranges == ((0, MiB), (100 * MiB, MiB), (200 * MiB, MiB // 2))   # the last one cut


def test_mapped_ranges_serve_when_the_image_has_no_trace_and_nothing_otherwise():
    plan = p.plan("new", 4096 * MiB, 10 * MiB, mapped=("old", [(0, MiB)]))
    assert (plan.how, plan.ranges) == ("mapped from old", ((0, MiB),))
    none = p.plan("new", 4096 * MiB, 10 * MiB)
    assert none.how == "none" and none.ranges == () and "no boot" in none.why


def test_traced_reads_take_only_the_images_reads_in_order():
    text = ("# bootserverd nbd trace 1\n# image: a\n# fields: x\n0.1 READ 4096 512\n0.2 FLUSH 0 0\n"
            "0.3 READ 0 4096\n# ended: session closed\n")
    other = text.replace("# image: a", "# image: b")
    assert p.traced_reads([parse(text), parse(other)], "a") == [(4096, 512), (0, 4096)]


def test_previous_version_is_the_newest_older_one_of_the_same_series_and_arch():
    names = ["desk-2026-01-01-000000-amd64", "desk-2026-03-01-000000-amd64", "desk-2026-05-01-000000-amd64",
             "desk-2026-02-01-000000-i386", "other-2026-03-15-000000-amd64", "plain"]
    assert p.previous_version("desk-2026-04-01-000000-amd64", names) == "desk-2026-03-01-000000-amd64"
    assert p.previous_version("desk-2026-01-01-000000-amd64", names) is None
    assert p.previous_version("plain", names) is None


# -- mapping by file --
def test_map_by_file_finds_the_files_the_old_ranges_fell_in():
    old = {"/bin/sh": ((1000, 500),), "/lib/libc.so": ((2000, 3000), (6000, 1000)), "/usr/big": ((10_000, 90_000),),
           "/gone": ((7000, 100),), p.METADATA: ((0, 96), (200_000, 5000))}
    new = {"/bin/sh": ((5000, 400),), "/lib/libc.so": ((100, 2000), (9000, 1500)), "/usr/big": ((20_000, 99_000),),
           p.METADATA: ((0, 96), (300_000, 6000))}
    # reads: the first page (superblock, /bin/sh, libc's first extent), inside libc's second
    # extent, the end of /gone, the metadata tables
    mapped = p.map_by_file([(0, 4096), (6500, 10), (7050, 100), (201_000, 100)], old, new)
    assert mapped.files == 4 and mapped.missing == 1           # metadata, sh, libc, /gone
    assert list(mapped.ranges) == [(0, 96), (300_000, 6000), (5000, 400), (100, 2000), (9000, 1500)]
    only_libc = p.map_by_file([(6500, 10)], old, new)
    assert (only_libc.files, only_libc.ranges) == (1, ((100, 2000), (9000, 1500)))
    assert p.map_by_file([(999_999, 10)], old, new).ranges == ()


def test_map_by_file_sees_a_long_extent_that_starts_well_before_the_read():
    old = {"/a": ((0, 1_000_000),), "/b": ((1_000_000, 10),)}
    new = {"/a": ((50, 1_000_000),), "/b": ((0, 10),)}
    assert p.map_by_file([(999_000, 8)], old, new).ranges == ((50, 1_000_000),)


# -- when --
def test_parse_at():
    assert p.parse_at("07:15") == (7, 15)
    for bad in ("7", "24:00", "07:60", "7:5", "noon", ""):
        with pytest.raises(ValueError):
            p.parse_at(bad)


def test_seconds_until_the_next_time_of_day_in_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Helsinki")
    time.tzset()
    try:
        now = time.mktime((2026, 12, 2, 6, 0, 0, 0, 0, -1))
        assert p.seconds_until(now, (7, 15)) == 75 * 60
        assert p.seconds_until(now + 75 * 60, (7, 15)) == 86400          # at 07:15 exactly: tomorrow's
        assert p.seconds_until(now, (5, 0)) == 23 * 3600
        spring = time.mktime((2026, 3, 28, 8, 0, 0, 0, 0, -1))          # clocks go forward that night
        assert p.seconds_until(spring, (7, 15)) == 86400 - 45 * 60 - 3600
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


# -- the squashfs layout, read back from real images --
def _squash(tmp_path: Path, comp: str, extra: list[str] = ()) -> tuple[Path, Path]:
    root = tmp_path / "root"
    if not root.exists():
        (root / "usr/lib").mkdir(parents=True)
        (root / "usr/lib/big").write_bytes(os.urandom(700_000))
        (root / "usr/lib/sparse").write_bytes(b"\0" * 300_000 + b"x")
        (root / "etc").mkdir()
        for i in range(400):                       # more than one metadata block of directory entries
            (root / "etc" / f"file-{i:03d}-{'n' * 40}").write_bytes(f"{i}\n".encode())
        os.symlink("usr/lib/big", root / "link")
    image = tmp_path / f"{comp}{''.join(extra)}.img"
    subprocess.run(["mksquashfs", str(root), str(image), "-comp", comp, "-noappend", "-quiet", "-no-progress",
                    *extra], check=True, stdout=subprocess.DEVNULL)
    return root, image


def _read(image: Path):
    fd = os.open(image, os.O_RDONLY)
    try:
        return read_layout(lambda offset, size: os.pread(fd, size, offset))
    finally:
        os.close(fd)


@pytest.mark.parametrize("comp", ["gzip", "xz", "zstd"])
def test_layout_lists_every_file_inside_the_image(tmp_path, comp):
    if comp == "zstd":
        pytest.importorskip("zstandard")
    root, image = _squash(tmp_path, comp)
    layout = _read(image)
    files = {"/" + str(q.relative_to(root)) for q in root.rglob("*") if q.is_file() and not q.is_symlink()}
    assert set(layout.files) - {p.METADATA} == files
    size = image.stat().st_size
    for path, extents in layout.files.items():
        assert all(0 <= o and o + n <= size for o, n in extents), path
    assert layout.files[p.METADATA][0] == (0, 96)


def test_layout_extents_hold_the_files_bytes_when_nothing_is_compressed(tmp_path):
    root, image = _squash(tmp_path, "gzip", ["-noI", "-noD", "-noF", "-noX"])
    layout = _read(image)
    data = image.read_bytes()
    for path in ("/usr/lib/big", "/etc/file-007-" + "n" * 40):
        got = b"".join(data[o:o + n] for o, n in layout.files[path])
        assert (root / path.lstrip("/")).read_bytes() in got
    # the zero blocks of a sparse file take no room in the image
    assert sum(n for _, n in layout.files["/usr/lib/sparse"]) < 300_000


def test_layout_of_something_else_is_an_error():
    with pytest.raises(LayoutError):
        read_layout(lambda offset, size: b"\0" * size)
