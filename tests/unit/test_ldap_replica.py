"""ldapsync.replica's pure parts: the configure plan, the olcSyncrepl line, CSN lag."""
import pytest

from ldapsync.replica import (SCHEMA_FILES, LocalConfig, Options, SlaveError, plan, syncrepl_line,
                            to_ldif)

SCHEMA = SCHEMA_FILES[0].read_text()
OPTS = Options(central="ldap://central.example.org", base="dc=x", bind_dn="cn=repl,dc=x",
               password="s3cret pw", daemon_dn="cn=bootserverd,dc=x", ca_file="/etc/ssl/ca.pem")
FRESH = LocalConfig(modules={"cn=module{0},cn=config": ("{0}back_mdb",)}, schemas=("core", "cosine", "nis"),
                    database_dn="olcDatabase={1}mdb,cn=config",
                    database={"olcDbIndex": ("objectClass eq", "cn,uid eq")})


def test_syncrepl_line_requires_starttls_unless_ldaps_and_verifies_the_ca():
    line = syncrepl_line(OPTS)
    for part in ("type=refreshAndPersist", "starttls=critical", 'retry="5 5 60 +"', "tls_reqcert=demand",
                 'credentials="s3cret pw"', "binddn=cn=repl,dc=x", "searchbase=dc=x"):
        assert part in line
    ldaps = Options(**{**OPTS.__dict__, "central": "ldaps://central.example.org"})
    assert "starttls" not in syncrepl_line(ldaps)


def test_plan_for_a_fresh_slapd_in_order_and_then_nothing():
    changes = plan(FRESH, OPTS, SCHEMA)
    ldif = to_ldif(changes)
    order = [ldif.index(x) for x in ("olcModuleLoad: syncprov", "cn=bootserverd,cn=schema,cn=config",
                                     "olcDbIndex: macAddress eq", "olcOverlay: syncprov", "olcSyncrepl:")]
    assert order == sorted(order)
    assert "olcDbIndex: entryUUID eq" in ldif and "olcDbIndex: entryCSN eq" in ldif
    assert 'olcLimits: dn.exact="cn=bootserverd,dc=x" size=unlimited' in ldif
    assert "olcRootDN: cn=syncrepl,dc=x" in ldif
    done = LocalConfig(modules={"cn=module{0},cn=config": ("{0}back_mdb", "{1}syncprov")},
                       schemas=("core", "cosine", "nis", "bootserverd"), database_dn=FRESH.database_dn,
                       database={"olcRootDN": ("cn=admin,dc=x",),
                                 "olcDbIndex": ("objectClass eq", "macAddress,entryUUID eq", "entryCSN eq"),
                                 "olcLimits": ('{0}dn.exact="cn=bootserverd,dc=x" size=unlimited time=unlimited',),
                                 "olcSyncrepl": ("{0}" + syncrepl_line(OPTS),)},
                       overlays=("syncprov",))
    assert plan(done, OPTS, SCHEMA) == []


def test_plan_refuses_what_cannot_work():
    with pytest.raises(SlaveError, match="nis"):
        plan(LocalConfig({}, ("core", "cosine"), "db"), OPTS, SCHEMA)
    with pytest.raises(SlaveError, match="no database for dc=x"):
        plan(LocalConfig({}, ("core", "cosine", "nis"), None), OPTS, SCHEMA)
    with pytest.raises(SlaveError, match="STARTTLS"):
        plan(FRESH, Options(**{**OPTS.__dict__, "starttls": False}), SCHEMA)
    loopback = Options(**{**OPTS.__dict__, "starttls": False, "central": "ldap://127.0.0.1:3890"})
    assert "starttls" not in to_ldif(plan(FRESH, loopback, SCHEMA))


