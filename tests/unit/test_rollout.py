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


# -- the order of levels: bootserverd's own, and Puavo's (InventoryRecords.boot_server set) --
from bootserverd.model.objects import BootServerLevel  # noqa: E402
from bootserverd.model.rollout import Choice  # noqa: E402


def levels(boot_server, netboot=True, device_image=None, school_image=None, boot_image=None, org=None,
           server=None, config=None):
    device = Device(mac(1), image=device_image, school="north", netboot=netboot)
    records = InventoryRecords(devices=(device,), schools=MappingProxyType({"north": School("north", image=school_image)}),
                               defaults=Defaults(image=org),
                               boot_server=BootServerLevel(boot_image, server) if boot_server else None)
    inv = Inventory(records, {}, config)
    return choose(inv, device), choose(inv, None, mac(2))


def test_puavo_order_each_level_and_who_skips_the_boot_server():
    full = {"device_image": "d", "school_image": "s", "boot_image": "bb", "org": "o", "server": "bs", "config": "c"}
    expected = [("device_image", "d", "device"), ("school_image", "s", "school"),
                ("boot_image", "bb", "boot server boot image"), ("org", "o", "defaults"),
                ("server", "bs", "boot server image"), ("config", "c", "server")]
    for i, (_, image, level) in enumerate(expected):
        # every level above this one empty: this one wins for a netboot device
        given_levels = {key: full[key] for key, _, _ in expected[i:]}
        device, _ = levels(True, **given_levels)
        assert (device.image, device.reason) == (image, f"assigned by {level}")
    # a localboot device (a laptop) skips both boot-server levels
    assert levels(True, netboot=False, boot_image="bb", org="o", server="bs")[0].image == "o"
    assert levels(True, netboot=False, boot_image="bb", server="bs", config="c")[0].image == "c"
    assert levels(True, netboot=False, boot_image="bb", server="bs")[0].image is None
    # an unregistered MAC: boot image → organisation → server image → config
    assert levels(True, boot_image="bb", org="o", server="bs")[1].image == "bb"
    assert levels(True, org="o", server="bs", config="c")[1].image == "o"
    assert levels(True, server="bs", config="c")[1].image == "bs"


def test_without_a_boot_server_level_the_order_is_unchanged():
    # device → school → config images.default → organisation; the boot-server fields are not read
    assert levels(False, school_image="s", org="o", config="c")[0].image == "s"
    assert levels(False, org="o", config="c")[0].reason == "assigned by server"
    assert levels(False, org="o", config="c")[1].image == "c"
    assert levels(False, org="o")[1].reason == "assigned by defaults"
    assert levels(False, boot_image="bb", server="bs")[0].image is None
    # the same records with Puavo's level: the organisation beats the config's default
    assert levels(True, org="o", config="c")[0].image == "o"


def test_rollout_still_works_on_puavo_chains_school_and_organisation_levels():
    school = School("north", image="a", next_image="b", rollout=Rollout(percent=100))
    device = Device(mac(1), school="north", netboot=True)
    records = InventoryRecords(devices=(device,), schools=MappingProxyType({"north": school}),
                               defaults=Defaults(image="a", next_image="b", rollout=Rollout(hosts=(mac(3),))),
                               boot_server=BootServerLevel("bb", "bs"))
    inv = Inventory(records, {"a": 1, "b": 1}, None)
    assert choose(inv, device).image == "b" and choose(inv, device).in_rollout
    laptop = Device(mac(3))
    inv = Inventory(InventoryRecords(devices=(laptop,), defaults=records.defaults,
                                     boot_server=records.boot_server), {"a": 1, "b": 1}, None)
    assert choose(inv, laptop).image == "b" and choose(inv, laptop).reason == "canary host"
    # the boot server's levels carry no next image
    inv = Inventory(InventoryRecords(boot_server=BootServerLevel("bb", None),
                                     defaults=Defaults(next_image="b", rollout=Rollout(percent=100))),
                    {"bb": 1, "b": 1}, None)
    assert choose(inv, None, mac(4)) == Choice("bb", "bb", None, False, "assigned by boot server boot image")


def test_unknown_client_menu_starts_with_the_puavo_unregistered_image():
    from ipaddress import IPv4Address

    from bootserverd.boot.resolver import BootResolver
    from bootserverd.config.settings import Config, ServerConfig
    from bootserverd.model.snapshot import Model
    published = {name: object() for name in ("a-img", "m-img", "z-img")}
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=Path("/tmp")))
    puavo = BootResolver(config, Model(Inventory(InventoryRecords(boot_server=BootServerLevel("m-img", None),
                                                                  defaults=Defaults(image="z-img")), published, None)))
    text = puavo.render("ipxe", "52:54:00:99:99:99", "x").decode()
    assert "item image0 Boot m-img" in text and "item image1 Boot a-img" in text and "item image2 Boot z-img" in text
    assert "choose --default image0 " in text
    # no boot-server level (YAML, bootserverd's schema): the alphabetical menu, as before
    plain = BootResolver(config, Model(Inventory(InventoryRecords(defaults=Defaults(image="z-img")), published, None)))
    assert "item image0 Boot a-img" in plain.render("ipxe", "52:54:00:99:99:99", "x").decode()
