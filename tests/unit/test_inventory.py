"""The YAML inventory and the model's inheritance rules."""

from pathlib import Path

import pytest

from bootserverd.inventory.yaml_source import parse_inventory
from bootserverd.model.objects import Defaults, Device, School, normalize_mac
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.config.schema import SchemaError

REPO = Path(__file__).resolve().parents[2]


def inventory_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "inventory.yaml"
    path.write_text(text)
    return path


def test_example_inventory_parses():
    directory = parse_inventory(REPO / "etc" / "inventory.example.yaml")
    macs = [d.mac for d in directory.devices]
    assert macs == ["52:54:00:12:34:56", "52:54:00:12:34:57", "52:54:00:12:34:58"]
    assert directory.schools["north-school"].boot_mode == "dualboot"
    assert directory.defaults.image == "demo-2026-01-01-000000-amd64"
    assert directory.devices[2].enabled is False


def test_a_file_with_only_devices_and_only_macs_is_valid(tmp_path):
    directory = parse_inventory(inventory_file(tmp_path, "devices:\n  - mac: AA-BB-CC-DD-EE-01\n"))
    assert directory.devices == (Device(mac="aa:bb:cc:dd:ee:01"),)
    assert directory.defaults == Defaults()


def test_inventory_errors_name_line_and_key_all_at_once(tmp_path):
    text = """\
devices:
  - mac: 52:54:00:12:34:56
    hostname: class-12
  - mac: not-a-mac
    type: toaster
  - mac: 52:54:00:12:34:56
    hostname: class-12
    school: atlantis
    enabeld: false
"""
    with pytest.raises(SchemaError) as info:
        parse_inventory(inventory_file(tmp_path, text))
    found = [str(p) for p in info.value.problems]
    path = tmp_path / "inventory.yaml"
    assert f"{path}:4: devices[1].mac: not a MAC address: 'not-a-mac'" in found
    assert any(p.startswith(f"{path}:5: devices[1].type: must be one of thinclient") for p in found)
    assert f"{path}:9: devices[2].enabeld: unknown key (did you mean 'enabled'?)" in found
    assert f"{path}:6: devices[2].mac: 52:54:00:12:34:56 is also used by devices[0]" in found
    assert f"{path}:7: devices[2].hostname: class-12 is also used by devices[0]" in found
    assert f"{path}:8: devices[2].school: school 'atlantis' is not defined under schools:" in found


@pytest.mark.parametrize("text,expected", [
    ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"), ("aa-bb-cc-dd-ee-ff", "aa:bb:cc:dd:ee:ff"),
    ("aabbccddeeff", "aa:bb:cc:dd:ee:ff"), ("aabb.ccdd.eeff", "aa:bb:cc:dd:ee:ff")])
def test_mac_forms(text, expected):
    assert normalize_mac(text) == expected


@pytest.mark.parametrize("text", ["aa:bb:cc:dd:ee", "aa:bb-cc:dd:ee:ff", "gg:bb:cc:dd:ee:ff", ""])
def test_bad_macs(text):
    with pytest.raises(ValueError):
        normalize_mac(text)


def make_inventory(server_image=None, org_image="org-img", school_image="school-img"):
    schools = {"s": School("s", image=school_image, kernel_args="splash", boot_mode="dualboot")}
    devices = (Device("aa:00:00:00:00:01", image="own-img", school="s", kernel_args="nomodeset"),
               Device("aa:00:00:00:00:02", school="s"),
               Device("aa:00:00:00:00:03"),
               Device("aa:00:00:00:00:04", boot_mode="localboot", school="s"))
    directory = InventoryRecords(devices, schools, Defaults(image=org_image, kernel_args="quiet", type="thinclient"))
    return Inventory(directory, {}, server_image)


def test_image_inheritance_device_school_server_organisation():
    inv = make_inventory(server_image="server-img")
    assert inv.image_for(inv.device("aa:00:00:00:00:01")) == "own-img"
    assert inv.image_for(inv.device("aa:00:00:00:00:02")) == "school-img"
    assert inv.image_for(inv.device("aa:00:00:00:00:03")) == "server-img"
    assert make_inventory().image_for(inv.device("aa:00:00:00:00:03")) == "org-img"
    assert make_inventory(school_image=None).image_for(inv.device("aa:00:00:00:00:02")) == "org-img"
    assert make_inventory(org_image=None).image_for(None) is None


def test_boot_mode_kernel_args_and_type_inherit():
    inv = make_inventory()
    one, two, three, four = (inv.device(f"aa:00:00:00:00:0{i}") for i in range(1, 5))
    assert inv.boot_mode_for(two) == "dualboot" and inv.boot_mode_for(three) == "netboot"
    assert inv.boot_mode_for(four) == "localboot"
    assert inv.kernel_args_for(one) == "quiet splash nomodeset"
    assert inv.kernel_args_for(three) == "quiet"
    assert inv.type_for(one) == "thinclient"


def test_model_replaces_whole_snapshots_and_notifies():
    model = Model(make_inventory())
    seen = []
    model.subscribe(lambda old, new: seen.append((old, new)))
    first = model.inventory
    model.update(images={"x": object()})
    assert model.inventory is not first and "x" in model.inventory.images
    assert first.images == {} and seen == [(first, model.inventory)]
    assert model.inventory.devices == first.devices

