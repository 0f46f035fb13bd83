"""nbd.trace: which sessions are recorded, the bounded recorder, the text format (plain values);
nbd.tracefile.write: atomic files, only the newest kept; the config keys of nbd.trace."""

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bootserverd.config import settings as configmod
from nbd import codec as c
from nbd.trace import (
    ImageSessions,
    Recorder,
    TraceError,
    TracePolicy,
    TraceRules,
    distinct_bytes,
    parse,
    to_prune,
)
from nbd.tracefile import listing, read, rules_of, write

MAC = "52:54:00:12:34:56"
START = 1_796_198_398.125          # 2026-12-02T07:59:58.125Z


def req(cmd, offset, length):
    return (0, cmd, 7, offset, length)


def test_nothing_is_recorded_by_default():
    policy = TracePolicy()
    assert not policy.rules.enabled
    assert policy.decide("10.0.0.5", MAC, "debian") is None


def test_a_device_is_picked_by_mac_or_by_ip_every_session():
    policy = TracePolicy(TraceRules(devices=frozenset({MAC, "10.0.0.9"})))
    assert policy.rules.enabled
    assert policy.decide("10.0.0.5", MAC, "debian") == f"device {MAC}"
    assert policy.decide("10.0.0.5", MAC, "debian") == f"device {MAC}"          # not used up
    assert policy.decide("10.0.0.9", None, "other") == "device 10.0.0.9"
    assert policy.decide("10.0.0.6", "52:54:00:00:00:01", "debian") is None


def test_the_next_n_sessions_of_an_image_then_none():
    policy = TracePolicy(TraceRules(images=(ImageSessions("debian", 2),)))
    assert policy.decide("10.0.0.1", None, "other") is None
    assert policy.decide("10.0.0.1", None, "debian") == "image debian (1 of 2)"
    assert policy.decide("10.0.0.2", None, "debian") == "image debian (2 of 2)"
    assert policy.decide("10.0.0.3", None, "debian") is None


def test_a_device_session_does_not_use_up_the_image_count():
    policy = TracePolicy(TraceRules(devices=frozenset({MAC}), images=(ImageSessions("debian", 1),)))
    assert policy.decide("10.0.0.1", MAC, "debian") == f"device {MAC}"
    assert policy.decide("10.0.0.2", None, "debian") == "image debian (1 of 1)"


def test_a_reload_rearms_only_an_image_whose_count_changed():
    policy = TracePolicy(TraceRules(images=(ImageSessions("a", 1), ImageSessions("b", 1))))
    assert policy.decide("h", None, "a") and policy.decide("h", None, "b")
    policy.reconfigure(TraceRules(images=(ImageSessions("a", 1), ImageSessions("b", 3))))
    assert policy.decide("h", None, "a") is None                     # same rule: stays used up
    assert policy.decide("h", None, "b") == "image b (1 of 3)"       # new count: armed again
    policy.reconfigure(TraceRules())
    assert policy.decide("h", None, "b") is None


def test_recorder_keeps_the_first_max_requests_and_counts_the_rest():
    rec = Recorder("debian", "10.0.0.5:40312", START, max_requests=3)
    rec.add(0.001, [req(c.CMD_READ, 0, 4096), req(c.CMD_READ, 4096, 512)])
    rec.add(0.0025, [req(c.CMD_CACHE, 1 << 20, 65536), req(c.CMD_READ, 8192, 4096)])
    rec.add(0.003, [req(c.CMD_DISC, 0, 0)])
    assert rec.rows == [(0.001, c.CMD_READ, 0, 4096), (0.001, c.CMD_READ, 4096, 512),
                        (0.0025, c.CMD_CACHE, 1 << 20, 65536)]
    assert rec.dropped == 2


def test_encoding_has_a_header_one_request_per_line_and_round_trips():
    rec = Recorder("debian-12", "10.0.0.5:40312", START, mac=MAC, reason="device " + MAC, max_requests=10)
    rec.add(0.000412, [req(c.CMD_READ, 0, 4096)])
    rec.add(1.5, [req(c.CMD_READ, 1 << 30, 131072), req(c.CMD_BLOCK_STATUS, 0, 1 << 20)])
    text = rec.encode()
    assert text.splitlines() == [
        "# bootserverd nbd trace 1",
        "# image: debian-12",
        "# client: 10.0.0.5:40312",
        f"# mac: {MAC}",
        "# started: 2026-12-02T07:59:58.125Z",
        f"# why: device {MAC}",
        "# fields: seconds-since-connect command offset length",
        "0.000412 READ 0 4096",
        "1.500000 READ 1073741824 131072",
        "1.500000 BLOCK_STATUS 0 1048576",
        "# ended: session closed",
        "# requests: 3 recorded, 0 not recorded (max_requests 10)",
    ]
    trace = parse(text)
    assert trace.header["image"] == "debian-12" and trace.header["client"] == "10.0.0.5:40312"
    assert [(r.seconds, r.command, r.offset, r.length) for r in trace.requests] == [
        (0.000412, "READ", 0, 4096), (1.5, "READ", 1 << 30, 131072), (1.5, "BLOCK_STATUS", 0, 1 << 20)]
    s = trace.summary()
    assert (s["requests"], s["reads"], s["read_bytes"], s["distinct_bytes"], s["seconds"], s["not_recorded"]) == \
        (3, 2, 4096 + 131072, 4096 + 131072, 1.5, 0)


@given(st.lists(st.tuples(st.floats(0, 1e5, allow_nan=False), st.sampled_from(sorted(c.CMD_NAMES)),
                          st.integers(0, 1 << 50), st.integers(0, 1 << 25)), max_size=50))
def test_any_recording_parses_back(rows):
    rec = Recorder("img", "127.0.0.1:1", START)
    for t, cmd, offset, length in rows:
        rec.add(t, [req(cmd, offset, length)])
    got = parse(rec.encode()).requests
    assert [(r.offset, r.length) for r in got] == [(o, n) for _, _, o, n in rows]
    assert all(abs(r.seconds - t) < 1e-6 for r, (t, *_) in zip(got, rows))


def test_a_bad_line_is_named():
    with pytest.raises(TraceError, match="line 1"):
        parse("0.1 READ 0 4096\n")
    with pytest.raises(TraceError, match="line 3: expected"):
        parse("# bootserverd nbd trace 1\n0.1 READ 0 4096\n0.2 READ zero 4096\n")


def test_distinct_bytes_is_the_union_of_the_ranges():
    assert distinct_bytes([]) == 0
    assert distinct_bytes([(0, 4096), (0, 4096), (2048, 4096), (10000, 10), (10005, 2)]) == 6144 + 10


def test_file_names_sort_by_start_and_only_the_newest_are_kept(tmp_path):
    a = Recorder("debian/12", "10.0.0.5:1", START)
    b = Recorder("debian/12", "10.0.0.6:1", START + 0.5)
    assert a.file_name() == "20261202T075958.125Z-10.0.0.5-debian_12.trace"
    assert a.file_name() < b.file_name()
    assert to_prune(["x.trace", "y.trace", "z.trace", "notes.txt"], 2) == ["x.trace"]
    for i in range(4):
        rec = Recorder("img", f"10.0.0.{i}:1", START + i)
        rec.add(0.1, [req(c.CMD_READ, i * 4096, 4096)])
        path = write(tmp_path / "traces", rec, keep=3)
        assert read(path).requests[0].offset == i * 4096
    assert [p.name.split("-")[1] for p in listing(tmp_path / "traces")] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    assert not [p for p in (tmp_path / "traces").iterdir() if p.name.startswith(".")]   # no temp file left


def test_config_keys(tmp_path):
    for name in ("images", "state"):
        (tmp_path / name).mkdir()
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    base = ("server:\n  address: 10.0.0.1\n  state_dir: state\nimages:\n  dir: images\n"
            "tftp:\n  enabled: false\ninventory:\n  source: yaml\n  file: inventory.yaml\n")
    path = tmp_path / "bootserverd.yaml"
    path.write_text(base)
    assert not rules_of(configmod.load(path).nbd.trace).enabled          # off by default
    path.write_text(base + "nbd:\n  trace:\n    devices: [52-54-00-12-34-56, 10.0.0.23]\n"
                    "    images: [{image: debian, sessions: 3}]\n    max_requests: 5000\n    keep_files: 7\n")
    rules = rules_of(configmod.load(path).nbd.trace)
    assert rules == TraceRules(frozenset({MAC, "10.0.0.23"}), (ImageSessions("debian", 3),), 5000, 7, 600.0)
    path.write_text(base + "nbd:\n  trace:\n    devices: [printer]\n    images: [{sessions: 2}]\n"
                    "    max_requests: 0\n")
    with pytest.raises(configmod.ConfigError) as info:
        configmod.load(path)
    found = [str(p) for p in info.value.problems]
    assert any(":13: nbd.trace.devices: must be a MAC" in p for p in found), found
    assert any(":14: nbd.trace.images[0].image: is required" in p for p in found), found
    assert any(":15: nbd.trace.max_requests: must be between 1" in p for p in found), found
