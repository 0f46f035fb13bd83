"""`bootserverd ldap-slave configure|status` against a real, bare local slapd over ldapi."""
import time

import ldap

from ldapsync import replica as slave
from tests.support.slapd import (ADMIN_DN, ADMIN_PW, BASE, DAEMON_DN, SCHEMA_DIR, Slapd, device_attrs,
                           standard_schemas)


def anonymous_search(server: Slapd, dn: str, attrs=("1.1",)):
    conn = ldap.initialize(server.uri)
    try:
        return conn.search_s(dn, ldap.SCOPE_BASE, attrlist=list(attrs))
    except ldap.NO_SUCH_OBJECT:
        return []
    finally:
        conn.unbind_s()


def test_configure_makes_a_bare_slapd_a_replica_then_status_and_rerun(tmp_path, capsys):
    central = Slapd("central", standard_schemas()).start()
    # a fresh Debian-like slapd: core, cosine, nis; no syncprov, no bootserverd schema
    local = Slapd("local", [SCHEMA_DIR / f"{n}.ldif" for n in ("core", "cosine", "nis")], bare=True).start()
    try:
        central.add(BASE, {"objectClass": ["dcObject", "organization"], "dc": "school", "o": "x"})
        central.add(f"cn=d1,{BASE}", device_attrs("d1", "52:54:00:00:00:01", bootserverdImage="img"))
        pw = tmp_path / "central.secret"
        pw.write_text(ADMIN_PW + "\n")
        args = ["configure", "--central", central.uri, "--base", BASE, "--bind-dn", ADMIN_DN,
                "--password-file", str(pw), "--local", local.ldapi, "--daemon-dn", DAEMON_DN]
        # a non-loopback centre without TLS is refused; loopback may go without STARTTLS
        assert slave.main(["configure", "--central", "ldap://192.0.2.1", *args[3:], "--no-starttls"]) == 2
        assert "STARTTLS cannot be turned off" in capsys.readouterr().err
        assert slave.main([*args, "--no-starttls", "--dry-run"]) == 0
        ldif = capsys.readouterr().out
        assert "olcSyncrepl: rid=101" in ldif and "add: olcModuleLoad\nolcModuleLoad: syncprov" in ldif
        assert ldif.index("cn=bootserverd,cn=schema,cn=config") < ldif.index("olcSyncrepl")
        assert anonymous_search(local, f"cn=d1,{BASE}") == []       # dry run changed nothing
        assert slave.main([*args, "--no-starttls"]) == 0
        assert "change(s) applied" in capsys.readouterr().out
        deadline = time.monotonic() + 10
        while not anonymous_search(local, f"cn=d1,{BASE}"):
            assert time.monotonic() < deadline, local.log()
            time.sleep(0.05)
        # the replica serves a sync search itself (syncprov), as bootserverd needs
        conn = ldap.initialize(local.uri)
        conn.search_ext_s(BASE, ldap.SCOPE_SUBTREE, "(macAddress=52:54:00:00:00:01)",
                          serverctrls=[__import__("ldap.syncrepl").syncrepl.SyncRequestControl(mode="refreshOnly")])
        conn.unbind_s()
        assert slave.main([*args, "--no-starttls"]) == 0
        assert "already configured; nothing changed" in capsys.readouterr().out
        deadline = time.monotonic() + 10
        while True:
            code = slave.main(["status", "--local", local.ldapi])
            out = capsys.readouterr().out
            if code == 0:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.1)
        assert "in sync (lag 0 s)" in out and central.uri in out
    finally:
        central.cleanup()
        local.cleanup()


def test_configure_without_a_database_for_the_base_says_so(tmp_path, capsys):
    local = Slapd("local", [SCHEMA_DIR / f"{n}.ldif" for n in ("core", "cosine", "nis")], bare=True).start()
    try:
        pw = tmp_path / "pw"
        pw.write_text("x")
        code = slave.main(["configure", "--central", "ldaps://central.example", "--base", "dc=other",
                           "--bind-dn", "cn=x", "--password-file", str(pw), "--local", local.ldapi])
        assert code == 2
        assert "has no database for dc=other" in capsys.readouterr().err
    finally:
        local.cleanup()
