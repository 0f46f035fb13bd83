"""bootserverd.model.rollout: canaries, stable percentages, release states, inheritance levels."""
from pathlib import Path
from types import MappingProxyType

from hypothesis import given, settings, strategies as st

from bootserverd.model.objects import Defaults, Device, Rollout, School

from bootserverd.model.objects import InventoryRecords

from bootserverd.model.snapshot import Inventory
from bootserverd.model.rollout import bucket, choose, demand

REPO = Path(__file__).resolve().parents[2]


def mac(i: int) -> str:
    return ":".join(f"{b:02x}" for b in (0x52, 0x54, i >> 24 & 255, i >> 16 & 255, i >> 8 & 255, i & 255))


def inventory(devices=(), percent=0.0, hosts=(), groups=(), releases=None, school=None, published=("a", "b")):
    directory = InventoryRecords(devices=tuple(devices),
                          schools=MappingProxyType({"north": school or School("north")}),
                          defaults=Defaults(image="a", next_image="b", type="laptop",
                                            rollout=Rollout(percent=percent, hosts=tuple(hosts), groups=tuple(groups))),
                          releases=MappingProxyType(releases or {}))
    return Inventory(directory, {name: object() for name in published}, None)


def test_percentages_assign_stable_correct_fractions():
    devices = [Device(mac(i)) for i in range(20000)]
    for percent in (0, 1, 10, 50, 100):
        inv = inventory(devices, percent=percent)
        moved = sum(choose(inv, d).image == "b" for d in devices)
        assert abs(moved / len(devices) * 100 - percent) < 1.0, (percent, moved)
    # stable: the same device gets the same answer every time; widening keeps those already in
    inv10, inv30 = inventory(devices, percent=10), inventory(devices, percent=30)
    in10 = {d.mac for d in devices if choose(inv10, d).in_rollout}
    assert in10 == {d.mac for d in devices if choose(inv10, d).in_rollout}
    assert in10 <= {d.mac for d in devices if choose(inv30, d).in_rollout}


@settings(max_examples=200)
@given(st.integers(0, 2 ** 48 - 1), st.text(min_size=1, max_size=20))
def test_bucket_range(i, salt):
    assert 0 <= bucket(mac(i % 2 ** 32), salt) < 100


def test_canaries_by_host_mac_and_group():
    laptop = Device(mac(1), hostname="lab-1")
    other = Device(mac(2), hostname="lab-2", type="thinclient")
    north = Device(mac(3), school="north", type="thinclient")
    inv = inventory([laptop, other, north], hosts=["lab-1"], groups=["north"])
    assert choose(inv, laptop).image == "b" and choose(inv, laptop).reason == "canary host"
    assert choose(inv, other).image == "a"
    assert choose(inv, north).image == "b" and "north" in choose(inv, north).reason
    assert choose(inventory([other], hosts=[mac(2)]), other).image == "b"
    assert choose(inventory([other], groups=["thinclient"]), other).image == "b"     # device type as group


def test_release_states():
    devices = [Device(mac(i), hostname=f"h{i}") for i in range(200)]
    testing = inventory(devices, percent=100, hosts=["h1"], releases={"b": "testing"})
    assert [d.hostname for d in devices if choose(testing, d).image == "b"] == ["h1"]
    withdrawn = inventory(devices, percent=100, hosts=["h1"], releases={"b": "withdrawn"})
    assert all(choose(withdrawn, d).image == "a" for d in devices)
    assert "withdrawn" in choose(withdrawn, devices[0]).reason
    current_withdrawn = inventory(devices, percent=0, releases={"a": "withdrawn"})
    assert all(choose(current_withdrawn, d).image == "b" for d in devices)
    unpublished = inventory(devices, percent=100, published=("a",))
    assert all(choose(unpublished, d).image == "a" for d in devices)


def test_most_specific_assignment_wins():
    pinned = Device(mac(1), image="p")
    in_school = Device(mac(2), school="north")
    school = School("north", image="s", next_image="b", rollout=Rollout(percent=100))
    inv = inventory([pinned, in_school], percent=100, school=school, published=("a", "b", "p", "s"))
    assert choose(inv, pinned).image == "p" and choose(inv, pinned).reason == "assigned by device"
    assert choose(inv, in_school).image == "b"
    assert choose(inv, None, mac(9)).image == "b"        # unregistered MAC: defaults, 100%
    assert choose(inv, None).image == "a"                # no MAC at all


def test_demand_counts_pairs():
    devices = [Device(mac(i)) for i in range(10)]
    inv = inventory(devices, percent=100)
    reports = {d.mac: "a" for d in devices[:6]} | {d.mac: "b" for d in devices[6:]}
    assert demand(inv, reports) == {("a", "b"): 6}
