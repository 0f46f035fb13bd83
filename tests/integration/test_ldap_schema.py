"""etc/ldap: slaptest accepts both forms of the schema, they define the same things, the
OIDs sit under a UUID arc, and a device entry made of the standard classes + ours is valid."""
import re
import subprocess
import uuid

import ldap
import pytest

from tests.support.slapd import BASE, REPO, SCHEMA_DIR, Slapd, device_attrs, standard_schemas

SCHEMA = REPO / "etc" / "ldap" / "bootserverd.schema"
LDIF = REPO / "etc" / "ldap" / "bootserverd.ldif"


def test_slaptest_accepts_the_slapd_conf_form(tmp_path):
    conf = tmp_path / "slapd.conf"
    conf.write_text("".join(f"include {SCHEMA_DIR / n}.schema\n" for n in ("core", "cosine", "nis"))
                    + f"include {SCHEMA}\n")
    (tmp_path / "out").mkdir()
    result = subprocess.run(["slaptest", "-f", str(conf), "-F", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_slaptest_accepts_the_cn_config_form(tmp_path):
    server = Slapd("schema", standard_schemas())       # slapadd -n0 of the .ldif; raises on error
    try:
        result = subprocess.run(["slaptest", "-u", "-F", str(server.workdir / "slapd.d")],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
    finally:
        server.cleanup()


def _definitions(text: str) -> list[str]:
    """Every ( ... ) definition and objectIdentifier, whitespace-normalised."""
    text = re.sub(r"^#.*$", "", text, flags=re.M)
    text = re.sub(r"\n ", "", text)                   # LDIF continuation lines
    found = re.findall(r"\(\s*bootserverd(?:Attr|Class):\d+.*?\)\s*(?=\n\S|\n*$|olc)", text, re.S)
    oids = re.findall(r"(bootserverd(?:OID|Attr|Class)\s+[\d.]+|bootserverd(?:Attr|Class)\s+bootserverdOID:\d)", text)
    return sorted(" ".join(d.split()) for d in found) + sorted(" ".join(o.split()) for o in oids)


def test_both_forms_define_the_same_schema():
    schema, ldif = _definitions(SCHEMA.read_text()), _definitions(LDIF.read_text())
    assert len(schema) == 19 + 4 + 3
    assert schema == ldif


def test_oid_arc_is_a_uuid_arc():
    arc = re.search(r"objectIdentifier bootserverdOID 2\.25\.(\d+)", SCHEMA.read_text())[1]
    assert uuid.UUID(int=int(arc)).version == 4


@pytest.mark.parametrize("bad", [False, True])
def test_a_device_entry_of_standard_classes_plus_ours_is_valid(bad):
    server = Slapd("entry", standard_schemas()).start()
    try:
        server.add(BASE, {"objectClass": ["dcObject", "organization"], "dc": "school", "o": "x"})
        attrs = device_attrs("class-12", "52:54:00:12:34:56", ipHostNumber="10.0.0.57",
                             bootserverdDeviceType="thinclient", bootserverdImage="img",
                             bootserverdBootMode="dualboot", bootserverdEnabled="TRUE")
        if bad:
            attrs["bootserverdEnabled"] = "yes"       # not a BOOLEAN: the schema must refuse it
            with pytest.raises(ldap.INVALID_SYNTAX):
                server.add(f"cn=class-12,{BASE}", attrs)
        else:
            server.add(f"cn=class-12,{BASE}", attrs)
            server.add(f"ou=s1,{BASE}", {"objectClass": ["organizationalUnit", "bootserverdSchoolSettings"],
                                          "ou": "s1", "bootserverdSchoolCode": "s1",
                                          "bootserverdBootServer": ["boot1.s1.example"]})
            server.add(f"bootserverdImageName=img,{BASE}", {"objectClass": "bootserverdImageEntry",
                                                            "bootserverdImageName": "img",
                                                            "bootserverdImageSize": "123",
                                                            "bootserverdReleaseState": "testing"})
            assert server.exists(f"cn=class-12,{BASE}")
    finally:
        server.cleanup()
