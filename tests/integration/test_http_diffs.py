"""/diffs over real HTTP: 503 while a niced builder process runs, then the delta, which
Debian's `rdiff patch` turns into the new image byte for byte; refusals name the reason."""
import json
import subprocess
import time

import pytest

from tests.support.http import Daemon, build_pair, change_tree, curl, make_tree, mksquashfs, sha256

OLD, NEW, NEWER = ("ser-2026-01-01-000000-amd64", "ser-2026-02-01-000000-amd64", "ser-2026-03-01-000000-amd64")
OTHER = "other-2026-01-01-000000-amd64"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    work = tmp_path_factory.mktemp("http-diffs")
    images = work / "images"
    images.mkdir()
    build_pair(work, images, OLD, NEW)
    tree = work / "t3"
    make_tree(tree, seed=1)
    change_tree(tree, seed=2)
    change_tree(tree, seed=3)
    mksquashfs(tree, images / f"{NEWER}.img")
    make_tree(work / "other", seed=7, files=2)
    mksquashfs(work / "other", images / f"{OTHER}.img")
    d = Daemon(work / "d", images, http_extra="  diff_workers: 1\n  diff_block_size: 4096\n")
    yield d, images, work
    d.stop()


def fetch_diff(d, source, target, timeout=30):
    end = time.monotonic() + timeout
    seen_503 = False
    while time.monotonic() < end:
        status, headers, body = d.get(f"/diffs/{source}--{target}.rdiff")
        if status == 503:
            assert int(headers["Retry-After"]) >= 1
            seen_503 = True
            time.sleep(0.1)
            continue
        return status, headers, body, seen_503
    raise AssertionError(f"diff not built in {timeout} s:\n{d.log()}")


def test_diff_built_then_served_and_patches(setup, tmp_path):
    d, images, _ = setup
    status, headers, body, seen_503 = fetch_diff(d, OLD, NEW)
    assert status == 200 and seen_503
    delta = tmp_path / "d.rdiff"
    delta.write_bytes(body)
    assert headers["ETag"] == f'"{sha256(delta)}"'
    assert len(body) < (images / f"{NEW}.img").stat().st_size // 3
    out = tmp_path / "new.img"
    subprocess.run(["rdiff", "patch", str(images / f"{OLD}.img"), str(delta), str(out)], check=True)
    assert sha256(out) == sha256(images / f"{NEW}.img")
    # served like an image: ranges and resume
    part = curl("-f", "-r", "1000-1999", d.url(f"/diffs/{OLD}--{NEW}.rdiff")).stdout
    assert part == body[1000:2000]
    # the diff is servable once renamed into place; the builder's exit (and the log line) follows
    d.wait(lambda: f"diff {OLD} → {NEW}: built" in d.log(), 10, "the build log line")


def test_diff_build_is_cached_on_disk(setup):
    d, _, work = setup
    fetch_diff(d, OLD, NEW)
    cached = list((work / "d" / "state" / "diffs").glob("*.rdiff"))
    assert cached and all((c.parent / (c.name + ".json")).is_file() for c in cached)
    meta = json.loads((cached[0].parent / (cached[0].name + ".json")).read_text())
    assert meta["nice"] >= 10 and meta["block_size"] == 4096 and meta["sha256"] == sha256(cached[0])
    assert not list((work / "d" / "state" / "diffs").glob(".*"))
    before = d.log().count("building")
    assert fetch_diff(d, OLD, NEW)[0] == 200
    assert d.log().count("building") == before


def test_workers_limit_queues_builds(setup):
    d, _, _ = setup
    d.get(f"/diffs/{NEW}--{NEWER}.rdiff")
    d.get(f"/diffs/{OLD}--{NEWER}.rdiff")
    diffs = d.json("/status")["diffs"]
    assert diffs["running"] <= 1 and diffs["running"] + diffs["queued"] + diffs["built"] >= 2
    assert fetch_diff(d, NEW, NEWER)[0] == 200 and fetch_diff(d, OLD, NEWER)[0] == 200


@pytest.mark.parametrize("pair,reason", [((OLD, OLD), b"the images are the same"),
                                         ((OLD, "nosuch"), b"unknown image"),
                                         ((OLD, OTHER), b"different series")])
def test_senseless_pairs_are_404_with_a_reason(setup, pair, reason):
    d, _, _ = setup
    status, _, body = d.get(f"/diffs/{pair[0]}--{pair[1]}.rdiff")
    assert status == 404 and reason in body


def test_diff_paths_are_checked(setup):
    d, _, _ = setup
    for path in ("/diffs/..%2f..%2fetc%2fpasswd--x.rdiff", "/diffs/../../etc/passwd", "/diffs/a.rdiff"):
        got = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", d.url(path))
        assert got.stdout == b"404", path


def test_metrics_exposition(setup):
    d, _, _ = setup
    fetch_diff(d, OLD, NEW)
    d.get(f"/images/{OLD}.img")
    d.get("/nope")
    status, headers, body = d.get("/metrics")
    text = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples['bootserverd_transfers_total{outcome="done",service="http"}'] >= 2
    assert samples['bootserverd_sent_bytes_total{service="http"}'] > 0
    assert samples['bootserverd_http_requests_total{route="other",status="404"}'] >= 1
    assert samples['bootserverd_errors_total{kind="404",service="http"}'] >= 1
    assert samples["bootserverd_images_published"] == 4
    assert samples["bootserverd_diff_cache_bytes"] > 0
    assert samples['bootserverd_diff_builds_total{outcome="built"}'] >= 1
    for name in ("bootserverd_dhcp_leases", "bootserverd_nbd_connections", "bootserverd_directory_lag_seconds"):
        assert name in samples


@pytest.mark.parametrize("in_window", [True, False])
def test_reported_pairs_are_built_ahead_of_time(setup, tmp_path, in_window):
    _, images, _ = setup
    now = time.localtime()
    start = (now.tm_hour + (0 if in_window else 2)) % 24
    window = f"{start:02}:00-{(start + 1) % 24:02}:59" if not in_window else f"{now.tm_hour:02}:00-{(now.tm_hour + 1) % 24:02}:59"
    inventory = (f"defaults: {{image: {OLD}, next_image: {NEW}, rollout: {{percent: 100}}}}\n"
                 'devices: [{mac: "52:54:00:00:00:07", hostname: lap7}]\n')
    state = tmp_path / "state"
    state.mkdir()
    (state / "device-reports.json").write_text(json.dumps({"52:54:00:00:00:07": {"current": OLD}}))
    d = Daemon(tmp_path, images, inventory=inventory, http_extra=f'  diff_prebuild_window: "{window}"\n')
    try:
        if in_window:
            d.wait(lambda: f"diff {OLD} → {NEW}: built" in d.log(), 30, "ahead-of-time build")
        else:
            time.sleep(1.0)
            assert "building" not in d.log()
    finally:
        d.stop()
