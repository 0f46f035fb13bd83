"""A device's kernel version picks the kernel inside its image (Puavo's puavoDeviceKernelVersion):
inheritance (YAML and both directory profiles), the boot configs naming vmlinuz-<v>, the
fallback to the image's default with one warning, and BootFiles serving only known versions."""

from ipaddress import IPv4Address
from types import MappingProxyType, SimpleNamespace

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from bootserverd.boot.files import BootFileError, BootFiles
from bootserverd.config.settings import Config, HttpConfig, ServerConfig
from bootserverd.inventory.yaml_source import parse_inventory
from bootserverd.model.objects import Defaults, Device, School
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver
from bootserverd.config.schema import SchemaError
from ldapsync.mapping import PROFILES, DirectoryView

IMAGE = "bookworm-2026-11-20-101500-amd64"
OLD, NEW, MISSING = "6.1.0-18-amd64", "6.1.0-21-amd64", "6.1.0-99-amd64"
PINNED, SCHOOLED, PLAIN, WRONG = (f"52:54:00:00:00:0{i}" for i in range(1, 5))


@pytest.fixture
def world(tmp_path):
    """An image with two kernels (OLD is its default) as files on disk, four devices."""
    files = {}
    for leaf in ("vmlinuz", "initrd.img", f"vmlinuz-{OLD}", f"initrd.img-{OLD}", f"vmlinuz-{NEW}",
                 f"initrd.img-{NEW}"):
        files[leaf] = tmp_path / leaf
        files[leaf].write_bytes(leaf.encode())
    (tmp_path / "secret").write_text("not served")
    image = SimpleNamespace(kernel=files["vmlinuz"], initrd=files["initrd.img"], default_kernel_version=OLD,
                            kernels=MappingProxyType({v: (files[f"vmlinuz-{v}"], files[f"initrd.img-{v}"])
                                                      for v in (OLD, NEW)}))
    devices = (Device(PINNED, hostname="pinned", kernel_version=NEW, school="s"),
               Device(SCHOOLED, hostname="schooled", school="s2"),
               Device(PLAIN, hostname="plain"),
               Device(WRONG, hostname="wrong", type="thinclient", kernel_version=MISSING))
    schools = {"s": School("s", kernel_version=OLD), "s2": School("s2", kernel_version=NEW)}
    model = Model(Inventory(InventoryRecords(devices, schools, Defaults(image=IMAGE)), {IMAGE: image}, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=tmp_path))
    root = tmp_path / "tftp"
    root.mkdir()
    resolver = BootResolver(config, model)
    return SimpleNamespace(resolver=resolver, model=model, files=BootFiles(root, resolver, model),
                           config=config, image=image)


@pytest.fixture
def warnings():
    events = []

    def observe(event):
        if event.get("log_namespace") == "bootserverd.boot" and event["log_level"].name == "warn":
            events.append(event)
    globalLogPublisher.addObserver(observe)
    yield events
    globalLogPublisher.removeObserver(observe)


def lines(resolver, fmt, mac):
    return resolver.render(fmt, mac, "10.0.0.9").decode()


# -- inheritance --

def test_device_then_school_then_organisation():
    inventory = Inventory(InventoryRecords((Device("52:54:00:00:00:01", kernel_version="a", school="s"),
                                     Device("52:54:00:00:00:02", school="s"),
                                     Device("52:54:00:00:00:03", school="t"),
                                     Device("52:54:00:00:00:04")),
                                    {"s": School("s", kernel_version="b"), "t": School("t")},
                                    Defaults(kernel_version="c")), {}, None)
    assert [inventory.kernel_version_for(d) for d in inventory.devices] == ["a", "b", "c", "c"]
    assert inventory.kernel_version_for(None) == "c"
    assert Inventory(InventoryRecords(), {}, None).kernel_version_for(None) is None


def test_yaml_inventory_reads_kernel_version_at_every_level(tmp_path):
    path = tmp_path / "inventory.yaml"
    path.write_text("defaults: {kernel_version: 6.1.0-18-amd64}\n"
                    "schools: {north: {kernel_version: '6.10.0-1-amd64'}}\n"
                    "devices:\n  - {mac: '52:54:00:00:00:01', school: north, kernel_version: 6.1.0-21-amd64}\n"
                    "  - {mac: '52:54:00:00:00:02', school: north}\n  - {mac: '52:54:00:00:00:03'}\n")
    inventory = Inventory(parse_inventory(path), {}, None)
    assert [inventory.kernel_version_for(d) for d in inventory.devices] == [
        "6.1.0-21-amd64", "6.10.0-1-amd64", "6.1.0-18-amd64"]


@pytest.mark.parametrize("value,message", [("../x", "not a kernel version"), ("a b", "not a kernel version"),
                                           ("6.10", "in quotes"), ("[1]", "not a kernel version"),
                                           ("yes", "not a kernel version")])
def test_yaml_inventory_refuses_what_cannot_be_a_version(tmp_path, value, message):
    path = tmp_path / "inventory.yaml"
    path.write_text(f"devices:\n  - mac: '52:54:00:00:00:01'\n    kernel_version: {value}\n")
    with pytest.raises(SchemaError) as info:
        parse_inventory(path)
    assert "devices[0].kernel_version" in str(info.value) and message in str(info.value)


def _attrs(**kw):
    return {k.lower(): tuple([v] if isinstance(v, str) else v) for k, v in kw.items()}


def test_puavo_directory_inherits_the_version_from_school_and_organisation():
    base = "dc=edu,dc=test"
    view = DirectoryView(PROFILES["puavo"])
    view.put("o", base, _attrs(objectClass=["dcObject", "puavoEduOrg"], puavoDeviceImage=IMAGE,
                               puavoDeviceKernelVersion="6.1.0-18-amd64"))
    view.put("s", f"puavoId=1,ou=Groups,{base}", _attrs(objectClass="puavoSchool", cn="north",
                                                        puavoDeviceKernelVersion="6.1.0-21-amd64"))
    school = f"puavoId=1,ou=Groups,{base}"
    view.put("d1", f"puavoId=10,ou=Devices,{base}", _attrs(objectClass="puavoNetbootDevice", puavoHostname="a",
                                                           macAddress="52:54:00:00:00:01", puavoSchool=school))
    view.put("d2", f"puavoId=11,ou=Devices,{base}", _attrs(objectClass="puavoNetbootDevice", puavoHostname="b",
                                                           macAddress="52:54:00:00:00:02"))
    view.put("d3", f"puavoId=12,ou=Devices,{base}", _attrs(objectClass="puavoNetbootDevice", puavoHostname="c",
                                                           macAddress="52:54:00:00:00:03", puavoSchool=school,
                                                           puavoDeviceKernelVersion="6.1.0-9-amd64"))
    directory, problems = view.build()
    inventory = Inventory(directory, {}, None)
    assert problems == ()
    assert [inventory.kernel_version_for(inventory.device(f"52:54:00:00:00:0{i}")) for i in (1, 2, 3)] == [
        "6.1.0-21-amd64", "6.1.0-18-amd64", "6.1.0-9-amd64"]


def test_bootserverd_directory_reads_the_version_on_schools_and_the_organisation():
    base = "dc=school,dc=test"
    view = DirectoryView(PROFILES["bootserverd"])
    view.put("o", base, _attrs(objectClass="bootserverdOrganizationSettings", bootserverdKernelVersion="o-1"))
    view.put("s", f"ou=A,{base}", _attrs(objectClass="bootserverdSchoolSettings", bootserverdSchoolCode="a",
                                         bootserverdKernelVersion="s-1"))
    directory, _ = view.build()
    assert directory.defaults.kernel_version == "o-1" and directory.schools["a"].kernel_version == "s-1"


# -- the boot configs --

def test_pxelinux_and_grub_name_the_versioned_kernel_over_tftp(world):
    text = lines(world.resolver, "pxelinux.cfg", PINNED)
    assert f"images/{IMAGE}/vmlinuz-{NEW}" in text and f"images/{IMAGE}/initrd.img-{NEW}" in text
    grub = lines(world.resolver, "grub.cfg", PINNED)
    assert f"/images/{IMAGE}/vmlinuz-{NEW}" in grub and f"/images/{IMAGE}/initrd.img-{NEW}" in grub


def test_ipxe_names_the_versioned_kernel_over_http_or_tftp(world):
    text = lines(world.resolver, "ipxe", PINNED)
    assert f"http://10.0.0.1:8080/boot/{IMAGE}/vmlinuz-{NEW}" in text
    assert f"http://10.0.0.1:8080/boot/{IMAGE}/initrd.img-{NEW}" in text
    no_http = BootResolver(Config(server=world.config.server, http=HttpConfig(enabled=False)), world.model)
    assert f"tftp://10.0.0.1/images/{IMAGE}/vmlinuz-{NEW}" in lines(no_http, "ipxe", PINNED)


def test_school_version_applies_and_no_version_boots_the_default(world):
    assert f"KERNEL images/{IMAGE}/vmlinuz-{NEW}\n" in lines(world.resolver, "pxelinux.cfg", SCHOOLED)
    plain = lines(world.resolver, "pxelinux.cfg", PLAIN)
    assert f"images/{IMAGE}/vmlinuz\n" in plain and "vmlinuz-" not in plain and "initrd.img-" not in plain


def test_missing_version_boots_the_default_and_warns_once_per_device_and_image(world, warnings):
    for fmt in ("pxelinux.cfg", "ipxe", "grub.cfg", "pxelinux.cfg"):
        text = lines(world.resolver, fmt, WRONG)
        assert "vmlinuz-" not in text and "initrd.img-" not in text and "/vmlinuz" in text
    assert len(warnings) == 1
    line = formatEvent(warnings[0])
    assert WRONG in line and "wrong" in line and MISSING in line and IMAGE in line
    assert f"{OLD} (default), {NEW}" in line
    # another device wanting it, or the directory naming another version: one more line each
    inventory = world.model.inventory
    another = Device("52:54:00:00:00:09", kernel_version=MISSING)
    world.model.update(records=InventoryRecords(inventory.devices + (another,), inventory.schools, inventory.defaults))
    lines(world.resolver, "ipxe", "52:54:00:00:00:09")
    lines(world.resolver, "ipxe", "52:54:00:00:00:09")
    assert len(warnings) == 2


def test_image_without_a_kernel_map_boots_its_default(world, warnings):
    world.model.update(images={IMAGE: SimpleNamespace(kernel=world.image.kernel, initrd=world.image.initrd)})
    text = lines(world.resolver, "pxelinux.cfg", PINNED)
    assert "vmlinuz-" not in text and len(warnings) == 1 and "no versioned kernel" in formatEvent(warnings[0])


# -- the files behind the names --

@pytest.mark.parametrize("leaf", ["vmlinuz", "initrd.img", f"vmlinuz-{OLD}", f"initrd.img-{OLD}",
                                  f"vmlinuz-{NEW}", f"initrd.img-{NEW}"])
def test_bootfiles_serve_each_kernel_of_the_map(world, leaf):
    assert world.files.open(f"images/{IMAGE}/{leaf}", "10.0.0.9").read(0, 100) == leaf.encode()


@pytest.mark.parametrize("leaf", [f"vmlinuz-{MISSING}", "vmlinuz-", "initrd.img-", "vmlinuz-..", "vmlinuz-.",
                                  "initrd.img-vmlinuz", f"vmlinuz-{NEW}x", f"vmlinuz--{NEW}", "vmlinuz-secret",
                                  f"initrd.img-{NEW}.", "vmlinuzz", f"vmlinuz_{NEW}"])
def test_bootfiles_refuse_versions_the_image_lacks(world, leaf):
    with pytest.raises(BootFileError) as info:
        world.files.open(f"images/{IMAGE}/{leaf}", "10.0.0.9")
    assert info.value.kind == "not-found"


@pytest.mark.parametrize("path", [f"images/{IMAGE}/vmlinuz-../../secret", f"images/{IMAGE}/vmlinuz-../secret",
                                  f"images/{IMAGE}/vmlinuz-{NEW}/../../secret",
                                  f"images/{IMAGE}/initrd.img-..\\..\\secret",
                                  f"images/../{IMAGE}/vmlinuz-{NEW}", f"images/{IMAGE}/vmlinuz-{NEW}\x00"])
def test_bootfiles_refuse_traversal_through_a_version(world, path):
    (world.files.root / "secret").write_text("inside the root, still not reachable this way")
    with pytest.raises(BootFileError) as info:
        world.files.open(path, "10.0.0.9")
    assert info.value.kind in ("access-denied", "not-found")


def test_unpublished_image_has_no_versioned_kernel(world):
    with pytest.raises(BootFileError) as info:
        world.files.open(f"images/other/vmlinuz-{NEW}", "10.0.0.9")
    assert info.value.kind == "not-found"
