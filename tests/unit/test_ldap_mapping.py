"""ldapsync.mapping: entries (dicts) → InventoryRecords, both profiles, inheritance, bad entries."""

import pytest

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


def puavo_entries():
    return {
        "org": (ORG, attrs(objectClass=["dcObject", "puavoEduOrg"], puavoDeviceImage="org-img",
                           puavoDeviceKernelArguments="org=1")),
        "school": (f"puavoId=1,ou=Groups,{ORG}", attrs(objectClass="puavoSchool", cn="gryffindor",
                                                      puavoDeviceImage="school-img")),
        "school2": (f"puavoId=2,ou=Groups,{ORG}", attrs(objectClass="puavoSchool", cn="slytherin")),
        "boot": (f"puavoId=9,ou=Servers,ou=Hosts,{ORG}", attrs(
            objectClass="puavoServer", puavoHostname="boot1", puavoDeviceType="bootserver",
            puavoDeviceImage="server-img", puavoSchool=[f"puavoId=1,ou=Groups,{ORG}", f"puavoId=2,ou=Groups,{ORG}"])),
        "thin": (f"puavoId=10,ou=Devices,ou=Hosts,{ORG}", attrs(
            objectClass="puavoNetbootDevice", puavoHostname="testthin", macAddress="08:00:27:88:0c:a6",
            puavoDeviceType="thinclient", puavoDeviceBootImage="thin-boot-img", puavoDeviceImage="thin-img",
            puavoDeviceBootMode="dualboot", puavoDeviceKernelArguments="thin=1",
            puavoDeviceKernelVersion="6.1", puavoSchool=f"puavoId=1,ou=Groups,{ORG}")),
        "fat": (f"puavoId=11,ou=Devices,ou=Hosts,{ORG}", attrs(
            objectClass="puavoNetbootDevice", puavoHostname="fat1", macAddress="08:00:27:88:0c:a7",
            puavoDeviceType="fatclient", puavoDeviceBootImage="ignored-for-fat",
            puavoSchool=f"puavoId=1,ou=Groups,{ORG}")),
        "lap": (f"puavoId=12,ou=Devices,ou=Hosts,{ORG}", attrs(
            objectClass="puavoLocalbootDevice", puavoHostname="lap1", macAddress="08:00:27:88:0c:a8",
            puavoDeviceType="laptop", puavoSchool=f"puavoId=2,ou=Groups,{ORG}")),
    }


def test_puavo_profile_maps_devices_and_its_inheritance_chain():
    directory, problems = view(puavo_entries(), "puavo", server="boot1.hogwarts.fi").build()
    assert problems == ()
    inv = Inventory(directory, {}, None)
    thin, fat, lap = (inv.device(m) for m in ("08:00:27:88:0c:a6", "08:00:27:88:0c:a7", "08:00:27:88:0c:a8"))
    assert (thin.hostname, thin.type, thin.school, thin.boot_mode) == ("testthin", "thinclient", "gryffindor", "dualboot")
    assert inv.image_for(thin) == "thin-boot-img"            # a thin client's boot image wins
    assert inv.image_for(fat) == "school-img"                 # device → school
    assert inv.image_for(lap) == "server-img"                 # → boot server (this one)
    assert inv.kernel_args_for(thin) == "org=1 thin=1"
    assert set(inv.schools) == {"gryffindor", "slytherin"}
    # on another boot server, the organisation's image is the last step
    directory, _ = view(puavo_entries(), "puavo", server="other").build()
    inv = Inventory(directory, {}, None)
    assert inv.image_for(inv.device("08:00:27:88:0c:a8")) == "org-img"


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


@settings(max_examples=300, deadline=None)
@given(_OPS)
def test_incremental_build_equals_a_fresh_one(ops):
    live = DirectoryView(PROFILES["bootserverd"])
    for uuid, dn, entry, build_now in ops:
        if entry is None:
            live.delete(uuid)
        else:
            live.put(uuid, dn, entry)
        if build_now:
            live.build()
    directory, problems = live.build()
    fresh = DirectoryView(PROFILES["bootserverd"])
    for uuid, record in live.records.items():
        fresh.put_record(uuid, record)
    expected, expected_problems = fresh.build()
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
    assert Inventory(directory, {}, None).device("08:00:27:88:0c:a6").kernel_version == "6.1"
