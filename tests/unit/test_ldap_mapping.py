"""ldapsync.mapping: entries (dicts) → InventoryRecords, both profiles, inheritance, bad entries."""

import pytest

from bootserverd.model.objects import BootServerLevel
from bootserverd.model.rollout import choose
from bootserverd.model.snapshot import Inventory
from ldapsync.mapping import PROFILES, DirectoryView, ancestors, normalize_dn, split_dn

BASE = "dc=school,dc=test"


def attrs(**kw):
    return {k.lower(): tuple([v] if isinstance(v, str) else v) for k, v in kw.items()}


def dev(host, mac, **kw):
    return attrs(objectClass=["device", "ieee802Device", "bootserverdDevice"], cn=host, macAddress=mac, **kw)


def view(entries, profile="bootserverd", server=None):
    v = DirectoryView(PROFILES[profile], server_hostname=server)
    for uuid, (dn, a) in entries.items():
        v.put(uuid, dn, a)
    return v


def test_dn_helpers_normalise_case_spaces_and_escaped_commas():
    assert split_dn("CN=a\\,b , OU=X+cn = y,DC=t") == ["cn=a\\,b", "ou=x+cn=y", "dc=t"]
    assert normalize_dn("cn=A, dc=T") == "cn=a,dc=t"
    assert ancestors("cn=a,ou=b,dc=c") == ("ou=b,dc=c", "dc=c")


def test_bootserverd_device_with_every_attribute():
    v = view({"u1": (f"cn=class-12,ou=Devices,{BASE}",
                     dev("class-12", "52-54-00-AA-BB-01", ipHostNumber="10.0.0.57",
                         bootserverdDeviceType="ThinClient", bootserverdImage="img1",
                         bootserverdKernelArguments="quiet", bootserverdBootMode="dualboot",
                         bootserverdEnabled="FALSE"))})
    directory, problems = v.build()
    assert problems == ()
    (d,) = directory.devices
    assert (d.mac, d.hostname, d.type, d.ip, d.image, d.kernel_args, d.boot_mode, d.enabled) == \
        ("52:54:00:aa:bb:01", "class-12", "thinclient", "10.0.0.57", "img1", "quiet", "dualboot", False)


def test_one_device_per_mac_and_the_rdn_names_the_host():
    v = view({"u1": (f"cn=lap-1,{BASE}", dev(["laptop-alias", "lap-1"], ["52:54:00:00:00:01", "52:54:00:00:00:02"]))})
    directory, _ = v.build()
    assert sorted((d.mac, d.hostname) for d in directory.devices) == [
        ("52:54:00:00:00:01", "lap-1"), ("52:54:00:00:00:02", "lap-1")]


def test_school_by_reference_or_by_position_and_inheritance():
    school_a = (f"ou=A,{BASE}", attrs(objectClass=["organizationalUnit", "bootserverdSchoolSettings"],
                                      bootserverdSchoolCode="a", bootserverdDefaultImage="img-a",
                                      bootserverdKernelArguments="a=1", bootserverdBootMode="dualboot"))
    school_b = (f"ou=B,{BASE}", attrs(objectClass=["organizationalUnit", "bootserverdSchoolSettings"],
                                      bootserverdSchoolCode="b"))
    org = (BASE, attrs(objectClass=["dcObject", "bootserverdOrganizationSettings"],
                       bootserverdDefaultImage="img-org", bootserverdKernelArguments="o=1"))
    below_a = (f"cn=d1,ou=Devices,ou=A,{BASE}", dev("d1", "52:54:00:00:00:01"))
    ref_b = (f"cn=d2,ou=Devices,ou=A,{BASE}", dev("d2", "52:54:00:00:00:02", bootserverdSchool=f"OU=B, {BASE}"))
    v = view({"s1": school_a, "s2": school_b, "o": org, "d1": below_a, "d2": ref_b})
    directory, problems = v.build()
    assert problems == ()
    inv = Inventory(directory, {}, None)
    d1, d2 = inv.device("52:54:00:00:00:01"), inv.device("52:54:00:00:00:02")
    assert (d1.school, d2.school) == ("a", "b")
    assert (inv.image_for(d1), inv.image_for(d2)) == ("img-a", "img-org")
    assert inv.kernel_args_for(d1) == "o=1 a=1"
    assert (inv.boot_mode_for(d1), inv.boot_mode_for(d2)) == ("dualboot", "netboot")
    # the school's default changes: the same Device objects follow through the school name
    v.put("s1", school_a[0], {**school_a[1], "bootserverddefaultimage": ("img-a2",)})
    inv = Inventory(v.build()[0], {}, None)
    assert inv.image_for(inv.device("52:54:00:00:00:01")) == "img-a2"
    # the school is renamed: its devices follow
    v.put("s1", school_a[0], {**school_a[1], "bootserverdschoolcode": ("a-new",)})
    assert Inventory(v.build()[0], {}, None).device("52:54:00:00:00:01").school == "a-new"
    v.delete("s1")
    assert Inventory(v.build()[0], {}, None).device("52:54:00:00:00:01").school is None


def test_images_release_state():
    v = view({"i1": (f"bootserverdImageName=img1,{BASE}", attrs(objectClass="bootserverdImageEntry",
                                                                bootserverdImageName="img1",
                                                                bootserverdReleaseState="Withdrawn")),
              "i2": (f"bootserverdImageName=img2,{BASE}", attrs(objectClass="bootserverdImageEntry",
                                                                bootserverdImageName="img2"))})
    assert dict(v.build()[0].releases) == {"img1": "withdrawn", "img2": "released"}


def test_bad_entries_are_reported_and_the_rest_is_kept():
    v = view({"bad-mac": (f"cn=x,{BASE}", dev("x", "not-a-mac")),
              "half": (f"cn=y,{BASE}", dev("y", ["52:54:00:00:00:09", "zz"], bootserverdDeviceType="toaster",
                                               bootserverdBootMode="fly", ipHostNumber="10.0.0.300",
                                               bootserverdEnabled="yes")),
              "badhost": (f"cn=bad_host!,{BASE}", dev("bad_host!", "52:54:00:00:00:0a")),
              "noschoolcode": (f"ou=S,{BASE}", attrs(objectClass="bootserverdSchoolSettings")),
              "other": (f"cn=z,{BASE}", attrs(objectClass="person", cn="z"))})
    directory, problems = v.build()
    macs = {d.mac: d for d in directory.devices}
    assert set(macs) == {"52:54:00:00:00:09", "52:54:00:00:00:0a"}
    y = macs["52:54:00:00:00:09"]
    assert (y.type, y.boot_mode, y.ip, y.enabled) == (None, None, None, True)
    assert macs["52:54:00:00:00:0a"].hostname is None
    text = "\n".join(problems)
    for needle in ("cn=x,dc=school,dc=test: no valid macAddress", "'zz' is not a MAC address",
                   "'toaster' is not one of", "'fly' is not one of", "'10.0.0.300' is not an IPv4",
                   "'yes' is not TRUE or FALSE", "'bad_host!' is not a valid host name",
                   "ou=s,dc=school,dc=test: school without bootserverdSchoolCode"):
        assert needle in text
    assert len(problems) == 8


def test_duplicate_mac_keeps_the_smaller_dn_whatever_the_order():
    for order in ((1, 2), (2, 1)):
        entries = {f"u{i}": (f"cn=h{i},{BASE}", dev(f"h{i}", "52:54:00:00:00:01")) for i in order}
        directory, problems = view(entries).build()
        assert [d.hostname for d in directory.devices] == ["h1"]
        assert problems == ("cn=h2,dc=school,dc=test: MAC 52:54:00:00:00:01 is also cn=h1,dc=school,dc=test; ignored",)


def test_duplicate_school_name_and_second_organisation_are_reported():
    school = attrs(objectClass="bootserverdSchoolSettings", bootserverdSchoolCode="s")
    org = attrs(objectClass="bootserverdOrganizationSettings", bootserverdDefaultImage="i")
    directory, problems = view({"a": (f"ou=a,{BASE}", school), "b": (f"ou=b,{BASE}", school),
                                "o1": (BASE, org), "o2": (f"ou=x,{BASE}", org)}).build()
    assert list(directory.schools) == ["s"] and len(problems) == 2


def test_entry_that_stops_matching_the_profile_disappears():
    v = view({"u": (f"cn=a,{BASE}", dev("a", "52:54:00:00:00:01"))})
    assert len(v.build()[0].devices) == 1
    v.put("u", f"cn=a,{BASE}", attrs(objectClass="device", cn="a"))
    assert v.build()[0].devices == ()


# -- the puavo profile --
ORG = "dc=edu,dc=hogwarts,dc=fi"
GRYFFINDOR, SLYTHERIN = f"puavoId=1,ou=Groups,{ORG}", f"puavoId=2,ou=Groups,{ORG}"
BOOT1, BOOT2 = f"puavoId=9,ou=Servers,ou=Hosts,{ORG}", f"puavoId=8,ou=Servers,ou=Hosts,{ORG}"
THIN, TRAP, FAT, LAP, PLAIN = "08:00:27:88:0c:a6", "08:00:27:88:0c:a7", "08:00:27:88:0c:a9", "08:00:27:88:0c:a8", \
    "08:00:27:88:0c:aa"
BOOT1_MAC, BOOT2_MAC, UNKNOWN = "00:60:2f:00:00:01", "00:60:2f:00:00:02", "08:00:27:ff:ff:ff"


def puavo_device(classes, host, mac, school, **kw):
    return attrs(objectClass=classes, puavoHostname=host, macAddress=mac, puavoSchool=school, **kw)


def puavo_entries():
    """Every device carries a device-level puavoDeviceBootImage and a puavoDeviceCurrentImage:
    neither may ever be served (current puavo-rest)."""
    trap = {"puavoDeviceBootImage": "device-boot-img", "puavoDeviceCurrentImage": "running-img"}
    return {
        "org": (ORG, attrs(objectClass=["dcObject", "puavoEduOrg"], puavoDeviceImage="org-img",
                           puavoDeviceKernelArguments="org=1")),
        "school": (GRYFFINDOR, attrs(objectClass="puavoSchool", cn="gryffindor", puavoDeviceImage=" school-img ")),
        "school2": (SLYTHERIN, attrs(objectClass="puavoSchool", cn="slytherin")),
        "boot": (BOOT1, attrs(objectClass="puavoServer", puavoHostname="boot1", puavoDeviceType="bootserver",
                              macAddress="00-60-2F-00-00-01", puavoDeviceBootImage="boot1-boot-img",
                              puavoDeviceImage="boot1-img", puavoSchool=[GRYFFINDOR, SLYTHERIN])),
        "boot2": (BOOT2, attrs(objectClass="puavoServer", puavoHostname="boot2", puavoDeviceType="bootserver",
                               macAddress=BOOT2_MAC, puavoDeviceBootImage="boot2-boot-img",
                               puavoDeviceImage="boot2-img", puavoSchool=SLYTHERIN)),
        # 1. its own image
        "thin": (f"puavoId=10,ou=Devices,ou=Hosts,{ORG}", puavo_device(
            "puavoNetbootDevice", "testthin", THIN, GRYFFINDOR, puavoDeviceType="thinclient",
            puavoDeviceImage="thin-img", puavoDeviceBootMode="dualboot", puavoDeviceKernelArguments="thin=1",
            puavoDeviceKernelVersion="6.1", **trap)),
        # 2. its school's
        "trap": (f"puavoId=11,ou=Devices,ou=Hosts,{ORG}", puavo_device(
            "puavoNetbootDevice", "thin2", TRAP, GRYFFINDOR, puavoDeviceType="thinclient", **trap)),
        # 3. netboot, school without an image: this boot server's boot image
        "fat": (f"puavoId=12,ou=Devices,ou=Hosts,{ORG}", puavo_device(
            "puavoNetbootDevice", "fat1", FAT, SLYTHERIN, puavoDeviceType="fatclient", **trap)),
        # 4. localboot: skips the boot server, the organisation's
        "lap": (f"puavoId=13,ou=Devices,ou=Hosts,{ORG}", puavo_device(
            "puavoLocalbootDevice", "lap1", LAP, SLYTHERIN, puavoDeviceType="laptop", **trap)),
        # neither netboot nor localboot (puavoDevice only): as puavo-rest's netboot? is false
        "plain": (f"puavoId=14,ou=Devices,ou=Hosts,{ORG}", puavo_device(
            "puavoDevice", "other1", PLAIN, SLYTHERIN, puavoDeviceType="other")),
    }


def puavo_view(entries=None, server="boot1.hogwarts.fi", **changes):
    """``changes``: uuid → {attribute: value or None (removed)} over puavo_entries()."""
    entries = dict(entries or puavo_entries())
    for uuid, attr_changes in changes.items():
        dn, a = entries[uuid]
        a = dict(a)
        for name, value in attr_changes.items():
            if value is None:
                a.pop(name.lower(), None)
            else:
                a[name.lower()] = (value,)
        entries[uuid] = (dn, a)
    return view(entries, "puavo", server=server)


def answers(v, server_image=None):
    inv = Inventory(v.build()[0], {}, server_image)
    out = {mac: (choose(inv, inv.device(mac)).image, choose(inv, inv.device(mac)).reason)
           for mac in (THIN, TRAP, FAT, LAP, PLAIN, BOOT1_MAC, BOOT2_MAC)}
    out[UNKNOWN] = (choose(inv, None, UNKNOWN).image, choose(inv, None, UNKNOWN).reason)
    return out


def test_puavo_profile_maps_devices_and_its_inheritance_chain():
    directory, problems = puavo_view().build()
    assert problems == ()
    inv = Inventory(directory, {}, None)
    thin, trap, fat, lap, plain = (inv.device(m) for m in (THIN, TRAP, FAT, LAP, PLAIN))
    assert (thin.hostname, thin.type, thin.school, thin.boot_mode) == ("testthin", "thinclient", "gryffindor", "dualboot")
    assert (thin.netboot, trap.netboot, fat.netboot, lap.netboot, plain.netboot) == (True, True, True, False, False)
    assert thin.image == "thin-img" and trap.image is None      # device-level boot images are not read
    assert inv.kernel_args_for(thin) == "org=1 thin=1"
    assert set(inv.schools) == {"gryffindor", "slytherin"}
    assert directory.defaults.image == "org-img"                # the boot server no longer stands in
    assert directory.boot_server == BootServerLevel(boot_image="boot1-boot-img", image="boot1-img")


# The expected answers below are written from puavo-rest's rules (docs/ldap.md), not computed.
def test_puavo_cascade_every_level_wins_somewhere():
    assert answers(puavo_view()) == {
        THIN: ("thin-img", "assigned by device"),                    # 1. own image, not its boot image
        TRAP: ("school-img", "assigned by school"),                  # 2. school's, stripped
        FAT: ("boot1-boot-img", "assigned by boot server boot image"),   # 3. netboot: this server's boot image
        LAP: ("org-img", "assigned by defaults"),                    # 4. localboot skips 3
        PLAIN: ("org-img", "assigned by defaults"),                  # 4. not a netboot device
        BOOT1_MAC: ("boot1-img", "assigned by device"),              # the server's own image
        BOOT2_MAC: ("boot2-img", "assigned by device"),              # another server's MAC: its own image
        UNKNOWN: ("boot1-boot-img", "assigned by boot server boot image"),
    }
    # 3 falls through to the organisation when this server names no boot image
    no_boot = answers(puavo_view(boot={"puavoDeviceBootImage": None}))
    assert no_boot[FAT] == ("org-img", "assigned by defaults") and no_boot[UNKNOWN][0] == "org-img"
    assert no_boot[THIN][0] == "thin-img" and no_boot[TRAP][0] == "school-img" and no_boot[LAP][0] == "org-img"
    # 5. no organisation image either: netboot devices and unknown MACs get this server's image,
    # a laptop gets nothing from the directory (then the config's images.default, last)
    bare = puavo_view(boot={"puavoDeviceBootImage": None}, org={"puavoDeviceImage": None})
    got = answers(bare)
    assert got[FAT] == ("boot1-img", "assigned by boot server image") and got[UNKNOWN][0] == "boot1-img"
    assert got[LAP] == (None, "assigned by none") and got[PLAIN][0] is None
    assert got[BOOT1_MAC][0] == "boot1-img"
    with_default = answers(bare, server_image="config-img")
    assert with_default[LAP] == ("config-img", "assigned by server") and with_default[FAT][0] == "boot1-img"
    # the config's images.default is the last resort: the organisation's image beats it
    assert answers(puavo_view(), server_image="config-img")[LAP][0] == "org-img"
    # (no_boot above: the organisation's image beats this boot server's image, step 4 before 5)


def test_puavo_server_own_mac_falls_back_to_the_organisation():
    got = answers(puavo_view(boot={"puavoDeviceImage": None}, boot2={"puavoDeviceImage": None}))
    assert got[BOOT1_MAC] == ("org-img", "assigned by defaults") and got[BOOT2_MAC][0] == "org-img"
    directory, _ = puavo_view().build()
    server = directory.by_mac[BOOT1_MAC]
    assert (server.hostname, server.type, server.school, server.netboot) == ("boot1", "bootserver", None, False)


def test_puavo_other_boot_servers_never_influence_the_answers():
    on_boot2 = answers(puavo_view(server="boot2"))
    assert on_boot2[FAT][0] == on_boot2[UNKNOWN][0] == "boot2-boot-img"
    baseline = answers(puavo_view())
    # boot2's entry changes: nothing served by boot1 moves except boot2's own MAC
    changed = answers(puavo_view(boot2={"puavoDeviceBootImage": "x", "puavoDeviceImage": "y"}))
    assert {m: a for m, a in changed.items() if a != baseline[m]} == {BOOT2_MAC: ("y", "assigned by device")}
    # boot2's entry gone: the same
    entries = puavo_entries()
    del entries["boot2"]
    gone = answers(view(entries, "puavo", server="boot1"))
    # (its MAC is now unregistered here: this server's boot image)
    assert {m: a for m, a in gone.items() if a != baseline[m]} == {
        BOOT2_MAC: ("boot1-boot-img", "assigned by boot server boot image")}


def test_puavo_this_server_missing_keeps_the_puavo_chain_and_says_so():
    directory, problems = puavo_view(server="boot7").build()
    assert directory.boot_server == BootServerLevel(None, None)
    assert len(problems) == 1 and "no puavoServer entry has puavoHostname boot7" in problems[0]
    got = answers(puavo_view(server="boot7"), server_image="config-img")
    assert got[FAT] == got[LAP] == got[UNKNOWN] == ("org-img", "assigned by defaults")   # not config-img first
    entries = {k: v for k, v in puavo_entries().items() if k not in ("boot", "boot2")}
    directory, problems = view(entries, "puavo", server="boot1").build()
    assert problems == () and directory.boot_server == BootServerLevel()


def test_a_device_entry_claiming_a_boot_servers_mac_loses_to_the_server():
    for dn in (f"puavoId=1,ou=Devices,ou=Hosts,{ORG}", f"puavoId=99,ou=Devices,ou=Hosts,{ORG}"):
        entries = puavo_entries()
        entries["dup"] = (dn, puavo_device("puavoNetbootDevice", "dup1", BOOT1_MAC.upper(), GRYFFINDOR,
                                           puavoDeviceImage="dup-img"))
        for order in (list(entries), list(reversed(entries))):
            directory, problems = view({k: entries[k] for k in order}, "puavo", server="boot1").build()
            assert directory.by_mac[BOOT1_MAC].type == "bootserver"
            assert directory.by_mac[BOOT1_MAC].image == "boot1-img"
            assert problems == (f"{normalize_dn(dn)}: MAC {BOOT1_MAC} is also {normalize_dn(BOOT1)}; ignored",)
    # the server entry goes: the device entry takes the MAC
    v = view(entries, "puavo", server="boot1")
    v.build()
    v.delete("boot")
    directory, problems = v.build()
    assert directory.by_mac[BOOT1_MAC].hostname == "dup1"
    assert len(problems) == 1 and "no puavoServer entry has puavoHostname boot1" in problems[0]


def test_puavo_head_changes_rebuild_no_device():
    v = puavo_view()
    before, _ = v.build()
    entries = puavo_entries()
    for uuid, attr, value in (("school2", "puavoDeviceImage", "s2"), ("org", "puavoDeviceImage", "o2"),
                              ("boot", "puavoDeviceBootImage", "b2")):
        dn, a = entries[uuid]
        entries[uuid] = (dn, {**a, attr.lower(): (value,)})
        v.put(uuid, dn, entries[uuid][1])
        after, _ = v.build()
        # the same Device objects; a server entry re-maps only its own MACs (equal devices)
        rebuilt = {mac for mac in before.by_mac if after.by_mac[mac] is not before.by_mac[mac]}
        assert rebuilt == ({BOOT1_MAC} if uuid == "boot" else set())
        assert dict(after.by_mac) == dict(before.by_mac)
        before = after
    inv = Inventory(after, {}, None)
    assert (inv.image_for(inv.device(FAT)), inv.image_for(inv.device(LAP)), inv.image_for(None)) == ("s2", "s2", "b2")


def test_profiles_name_their_filter_and_attributes():
    assert "puavoDevice" in PROFILES["puavo"].filter and "puavoDeviceKernelVersion" in PROFILES["puavo"].attributes
    assert "bootserverdDevice" in PROFILES["bootserverd"].filter


@pytest.mark.parametrize("profile", ["bootserverd", "puavo"])
def test_unrelated_entries_are_not_records(profile):
    v = view({"x": (BASE, attrs(objectClass=["dcObject", "organization"]))}, profile)
    assert v.records == {} and v.build()[0].devices == ()


# -- incremental builds (a batch costs what it changes) equal a fresh assembly --
from hypothesis import given, settings, strategies as st  # noqa: E402

_DNS = (f"cn=h1,ou=A,{BASE}", f"cn=h2,ou=A,{BASE}", f"cn=h3,ou=B,{BASE}", f"ou=A,{BASE}", f"ou=B,{BASE}", BASE,
        f"bootserverdImageName=i,{BASE}")
_ENTRIES = st.one_of(
    st.builds(lambda h, m, i, s: dev(h, m, **({"bootserverdImage": i} if i else {}),
                                     **({"bootserverdSchool": s} if s else {})),
              st.sampled_from(("h1", "h2", "h3")),
              st.lists(st.sampled_from(("52:54:00:00:00:01", "52:54:00:00:00:02", "bad")), min_size=1, max_size=2),
              st.sampled_from((None, "img-1", "img-2")), st.sampled_from((None, f"ou=B,{BASE}"))),
    st.builds(lambda code, img: attrs(objectClass="bootserverdSchoolSettings", bootserverdSchoolCode=code,
                                      **({"bootserverdDefaultImage": img} if img else {})),
              st.sampled_from(("a", "b", "a2")), st.sampled_from((None, "img-s"))),
    st.builds(lambda img: attrs(objectClass="bootserverdOrganizationSettings", bootserverdDefaultImage=img),
              st.sampled_from(("img-o", "img-p"))),
    st.builds(lambda state: attrs(objectClass="bootserverdImageEntry", bootserverdImageName="i",
                                  bootserverdReleaseState=state), st.sampled_from(("testing", "withdrawn"))))
_OPS = st.lists(st.tuples(st.sampled_from(("u1", "u2", "u3", "u4", "u5")), st.sampled_from(_DNS),
                          st.one_of(st.none(), _ENTRIES), st.booleans()), max_size=25)


def replay(ops, profile: str, **kw):
    """The live view after ``ops`` (built now and then), and a fresh view of its final records."""
    live = DirectoryView(PROFILES[profile], **kw)
    for uuid, dn, entry, build_now in ops:
        if entry is None:
            live.delete(uuid)
        else:
            live.put(uuid, dn, entry)
        if build_now:
            live.build()
    fresh = DirectoryView(PROFILES[profile], **kw)
    for uuid, record in live.records.items():
        fresh.put_record(uuid, record)
    return live.build(), fresh.build()


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_incremental_build_equals_a_fresh_one(ops):
    (directory, problems), (expected, expected_problems) = replay(ops, "bootserverd")
    assert dict(directory.by_mac) == dict(expected.by_mac)
    assert sorted(d.mac for d in directory.devices) == sorted(directory.by_mac)
    assert (dict(directory.schools), directory.defaults, dict(directory.releases)) == \
        (dict(expected.schools), expected.defaults, dict(expected.releases))
    assert sorted(problems) == sorted(expected_problems)


def test_one_change_in_a_big_directory_touches_only_its_device():
    v = view({f"u{i}": (f"cn=h{i},{BASE}", dev(f"h{i}", f"52:54:00:00:{i >> 8:02x}:{i & 255:02x}"))
              for i in range(2000)})
    before, _ = v.build()
    v.put("u7", f"cn=h7,{BASE}", dev("h7", "52:54:00:00:00:07", bootserverdImage="new"))
    after, _ = v.build()
    changed = [mac for mac, d in after.by_mac.items() if before.by_mac[mac] is not d]
    assert changed == ["52:54:00:00:00:07"] and after.by_mac["52:54:00:00:00:07"].image == "new"


def test_bootserverd_rollout_and_kernel_version_fill_the_model_like_the_yaml_inventory():
    from bootserverd.model.objects import Rollout
    from bootserverd.model.rollout import choose
    school = (f"ou=A,{BASE}", attrs(objectClass="bootserverdSchoolSettings", bootserverdSchoolCode="a",
                                    bootserverdDefaultImage="old", bootserverdNextImage="new",
                                    bootserverdRolloutPercent="12.5", bootserverdRolloutHost=["Lab-1", "52-54-00-00-00-09"],
                                    bootserverdRolloutGroup="laptop"))
    org = (BASE, attrs(objectClass="bootserverdOrganizationSettings", bootserverdDefaultImage="o",
                       bootserverdNextImage="o2", bootserverdRolloutPercent="250"))
    device = (f"cn=d1,ou=A,{BASE}", dev("d1", "52:54:00:00:00:01", bootserverdImage="x", bootserverdNextImage="y",
                                        bootserverdRolloutHost="d1", bootserverdKernelVersion="6.1.0-28-amd64"))
    plain = (f"cn=d2,ou=A,{BASE}", dev("d2", "52:54:00:00:00:09"))
    directory, problems = view({"s": school, "o": org, "d1": device, "d2": plain}).build()
    assert directory.schools["a"].next_image == "new"
    assert directory.schools["a"].rollout == Rollout(12.5, ("Lab-1", "52:54:00:00:00:09"), ("laptop",))
    assert directory.defaults.next_image == "o2" and directory.defaults.rollout == Rollout(0.0)
    assert problems == ("dc=school,dc=test: bootserverdRolloutPercent '250' is not a number from 0 to 100; taken as 0",)
    inv = Inventory(directory, {"old": 1, "new": 1, "x": 1, "y": 1}, None)
    d1, d2 = inv.device("52:54:00:00:00:01"), inv.device("52:54:00:00:00:09")
    assert (d1.kernel_version, d1.next_image, d1.rollout) == ("6.1.0-28-amd64", "y", Rollout(0.0, ("d1",), ()))
    assert d2.kernel_version is None and d2.rollout is None
    assert choose(inv, d1).image == "y" and choose(inv, d2).reason == "canary host"


def test_puavo_kernel_version_is_mapped():
    directory, _ = view(puavo_entries(), "puavo", server="boot1").build()
    assert Inventory(directory, {}, None).device(THIN).kernel_version == "6.1"


def test_bootserverd_profile_has_no_boot_server_level():
    directory, _ = view({"o": (BASE, attrs(objectClass="bootserverdOrganizationSettings",
                                           bootserverdDefaultImage="org"))}).build()
    assert directory.boot_server is None
    inv = Inventory(directory, {}, "config-img")
    assert choose(inv, None, "52:54:00:00:00:01").image == "config-img"     # images.default before the org


_PUAVO_DNS = (f"puavoId=20,ou=Devices,ou=Hosts,{ORG}", f"puavoId=21,ou=Devices,ou=Hosts,{ORG}",
              f"puavoId=22,ou=Servers,ou=Hosts,{ORG}", f"puavoId=23,ou=Servers,ou=Hosts,{ORG}",
              GRYFFINDOR, SLYTHERIN, ORG)
_PUAVO_MACS = st.lists(st.sampled_from(("08:00:27:00:00:01", "08:00:27:00:00:02", "bad")), min_size=1, max_size=2)
_PUAVO_ENTRIES = st.one_of(
    st.builds(lambda cls, m, i, s: attrs(objectClass=cls, puavoHostname="h", macAddress=m,
                                         **({"puavoDeviceImage": i} if i else {}), **({"puavoSchool": s} if s else {})),
              st.sampled_from(("puavoNetbootDevice", "puavoLocalbootDevice")), _PUAVO_MACS,
              st.sampled_from((None, "img-1")), st.sampled_from((None, SLYTHERIN))),
    st.builds(lambda host, m, b, i: attrs(objectClass="puavoServer", puavoHostname=host, macAddress=m,
                                          **({"puavoDeviceBootImage": b} if b else {}),
                                          **({"puavoDeviceImage": i} if i else {})),
              st.sampled_from(("boot1", "boot2")), _PUAVO_MACS, st.sampled_from((None, "bb")),
              st.sampled_from((None, "bi"))),
    st.builds(lambda name, img: attrs(objectClass="puavoSchool", cn=name, **({"puavoDeviceImage": img} if img else {})),
              st.sampled_from(("g", "s")), st.sampled_from((None, "img-s"))),
    st.builds(lambda img: attrs(objectClass="puavoEduOrg", puavoDeviceImage=img), st.sampled_from(("o1", "o2"))))
_PUAVO_OPS = st.lists(st.tuples(st.sampled_from(("u1", "u2", "u3", "u4", "u5")), st.sampled_from(_PUAVO_DNS),
                                st.one_of(st.none(), _PUAVO_ENTRIES), st.booleans()), max_size=25)


@settings(max_examples=300, deadline=None)
@given(_PUAVO_OPS)
def test_puavo_incremental_build_equals_a_fresh_one(ops):
    """Boot server entries are head records and MAC holders at once: both sides stay exact."""
    (directory, problems), (expected, expected_problems) = replay(ops, "puavo", server_hostname="boot1")
    assert dict(directory.by_mac) == dict(expected.by_mac)
    assert (dict(directory.schools), directory.defaults, directory.boot_server) == \
        (dict(expected.schools), expected.defaults, expected.boot_server)
    assert sorted(problems) == sorted(expected_problems)
