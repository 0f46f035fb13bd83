"""Real slapd processes for the directory tests: a central server (syncprov) and a local
slave (syncrepl refreshAndPersist from the centre, and syncprov itself so bootserverd can
follow it), each from a generated cn=config (``slapadd -n0``) in a private directory, on a
free loopback port plus a private ldapi socket. Never touches /etc/ldap (only reads the
stock schema files from /etc/ldap/schema).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import ldap
import ldap.modlist

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULES = Path("/usr/lib/ldap")
BOOTSERVERD_SCHEMA = REPO / "etc" / "ldap" / "bootserverd.ldif"

BASE = "dc=school,dc=test"
ADMIN_DN = f"cn=admin,{BASE}"
ADMIN_PW = "admin-secret"
DAEMON_DN = f"cn=bootserverd,{BASE}"
DAEMON_PW = "daemon-secret"
ROOT_EXTERNAL = "gidNumber=0+uidNumber=0,cn=peercred,cn=external,cn=auth"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_ldif(workdir: Path, *, schemas: list[Path], syncrepl: str | None = None,
                size_limit: int = 500, bare: bool = False) -> str:
    """A complete cn=config: one mdb database for BASE with syncprov; ``syncrepl`` makes it a
    consumer. The daemon's DN gets ``size=unlimited`` (the global limit stays small on purpose,
    so a missing limit shows in the tests). ``bare``: a fresh Debian-like slapd (back_mdb
    only, no rootdn, no syncprov, no limits) for ``ldap-slave configure`` to complete."""
    includes = "".join(f"include: file://{path}\n" for path in schemas)
    modules = "olcModuleLoad: back_mdb\n" + ("" if bare else "olcModuleLoad: syncprov\n")
    # what a bootserverd site adds to a fresh slapd: a rootdn, indexes, the daemon's limits
    site = "" if bare else f"""\
olcDbMaxSize: 1073741824
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PW}
olcDbIndex: entryUUID,entryCSN eq
olcDbIndex: macAddress eq
olcLimits: dn.exact="{DAEMON_DN}" size=unlimited time=unlimited
"""
    consumer = f"olcSyncrepl: {syncrepl}\n" if syncrepl and not bare else ""
    overlay = "" if bare else """
dn: olcOverlay={0}syncprov,olcDatabase={1}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcSyncProvConfig
olcOverlay: {0}syncprov
olcSpCheckpoint: 100 1
olcSpSessionlog: 10000
"""
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {workdir}/slapd.pid
olcSizeLimit: {size_limit}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULES}
{modules}
dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{includes}
dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: to * by dn.exact={ROOT_EXTERNAL} manage by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE}
olcDbDirectory: {workdir}/db
olcDbIndex: objectClass eq
{site}olcAccess: to attrs=userPassword by anonymous auth by * none
olcAccess: to * by * read
{consumer}{overlay}"""


class Slapd:
    """One slapd in the foreground (``-d 0``), killed by its own PID in ``stop``."""

    def __init__(self, name: str, schemas: list[Path], syncrepl: str | None = None,
                 size_limit: int = 500, bare: bool = False):
        self.bare = bare
        self.name = name
        # short path: the ldapi socket path must fit in sun_path (108 bytes)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bsd-{name}-", dir="/tmp"))
        (self.workdir / "db").mkdir()
        (self.workdir / "slapd.d").mkdir()
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.socket = self.workdir / "ldapi"
        self.ldapi = "ldapi://" + urllib.parse.quote(str(self.socket), safe="")
        self.proc: subprocess.Popen | None = None
        ldif = self.workdir / "config.ldif"
        ldif.write_text(config_ldif(self.workdir, schemas=schemas, syncrepl=syncrepl, size_limit=size_limit,
                                    bare=bare))
        result = subprocess.run(["slapadd", "-n0", "-F", str(self.workdir / "slapd.d"), "-l", str(ldif)],
                                capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"slapadd -n0 for {name} failed: {result.stderr}")

    def start(self, timeout: float = 10.0) -> "Slapd":
        self._log = open(self.workdir / "slapd.log", "a")
        self.proc = subprocess.Popen(["slapd", "-d", "0", "-h", f"{self.uri}/ {self.ldapi}",
                                      "-F", str(self.workdir / "slapd.d")],
                                     stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = ldap.initialize(self.ldapi if self.bare else self.uri)
                conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 1.0)
                if self.bare:
                    conn.sasl_external_bind_s()
                else:
                    conn.simple_bind_s(ADMIN_DN, ADMIN_PW)
                conn.unbind_s()
                return self
            except ldap.LDAPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"slapd {self.name} did not start:\n{self.log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """kill -9 (the reliability tests): no clean shutdown, the mdb must recover on start."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log(self) -> str:
        path = self.workdir / "slapd.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # -- client side, as the admin --
    def connect(self) -> "ldap.ldapobject.LDAPObject":
        conn = ldap.initialize(self.uri)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
        conn.simple_bind_s(ADMIN_DN, ADMIN_PW)
        return conn

    def add(self, dn: str, attrs: dict[str, list[str] | str], conn=None) -> None:
        entry = {k: [v.encode() for v in ([vals] if isinstance(vals, str) else vals)]
                 for k, vals in attrs.items()}
        own = conn is None
        conn = conn or self.connect()
        try:
            conn.add_s(dn, ldap.modlist.addModlist(entry))
        finally:
            if own:
                conn.unbind_s()

    def replace(self, dn: str, attrs: dict[str, list[str] | str | None]) -> None:
        mods = [(ldap.MOD_REPLACE, k, None if v is None else
                 [x.encode() for x in ([v] if isinstance(v, str) else v)]) for k, v in attrs.items()]
        conn = self.connect()
        try:
            conn.modify_s(dn, mods)
        finally:
            conn.unbind_s()

    def delete(self, dn: str) -> None:
        conn = self.connect()
        try:
            conn.delete_s(dn)
        finally:
            conn.unbind_s()

    def context_csn(self) -> list[str]:
        conn = self.connect()
        try:
            result = conn.search_s(BASE, ldap.SCOPE_BASE, attrlist=["contextCSN"])
        except ldap.NO_SUCH_OBJECT:
            return []
        finally:
            conn.unbind_s()
        return sorted(v.decode() for v in result[0][1].get("contextCSN", []))

    def exists(self, dn: str) -> bool:
        conn = self.connect()
        try:
            conn.search_s(dn, ldap.SCOPE_BASE, attrlist=["1.1"])
            return True
        except ldap.NO_SUCH_OBJECT:
            return False
        finally:
            conn.unbind_s()


def standard_schemas(extra: list[Path] = ()) -> list[Path]:
    # cosine before nis (nis uses cosine's attributes); bootserverd's needs both
    return [SCHEMA_DIR / "core.ldif", SCHEMA_DIR / "cosine.ldif", SCHEMA_DIR / "nis.ldif",
            BOOTSERVERD_SCHEMA, *extra]


class Pair:
    """A central slapd and a slave replicating it; the base and the daemon's bind entry exist."""

    def __init__(self, extra_schemas: list[Path] = (), retry: str = "1 +"):
        schemas = standard_schemas(list(extra_schemas))
        self.central = Slapd("central", schemas).start()
        self.central.add(BASE, {"objectClass": ["dcObject", "organization"], "dc": "school", "o": "Test School"})
        self.central.add(DAEMON_DN, {"objectClass": ["organizationalRole", "simpleSecurityObject"],
                                     "cn": "bootserverd", "userPassword": DAEMON_PW})
        syncrepl = (f'rid=001 provider={self.central.uri} bindmethod=simple binddn="{ADMIN_DN}" '
                    f'credentials={ADMIN_PW} searchbase="{BASE}" type=refreshAndPersist '
                    f'retry="{retry}" timeout=2 network-timeout=2 keepalive=10:3:1')
        self.slave = Slapd("slave", schemas, syncrepl=syncrepl).start()
        self.wait_in_sync()

    def wait_in_sync(self, timeout: float = 10.0) -> None:
        """Until the slave's contextCSN equals the centre's (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            central = self.central.context_csn()
            if central and self.slave.context_csn() == central:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"slave not in sync after {timeout} s:\n{self.slave.log()}")
            time.sleep(0.02)

    def password_file(self, directory: Path) -> Path:
        path = directory / "ldap.secret"
        path.write_text(DAEMON_PW + "\n")
        os.chmod(path, 0o600)
        return path

    def cleanup(self) -> None:
        # the centre first: a slave stopping with a live syncrepl session takes ~2 s
        for server in (self.central, self.slave):
            server.cleanup()


def device_attrs(hostname: str, mac: str, **extra) -> dict:
    """A device entry in bootserverd's schema."""
    attrs = {"objectClass": ["device", "ieee802Device", "bootserverdDevice"],
             "cn": hostname, "macAddress": mac}
    for key, value in extra.items():
        if key == "ipHostNumber":
            attrs["objectClass"] = attrs["objectClass"] + ["ipHost"]
        attrs[key] = value
    return attrs
