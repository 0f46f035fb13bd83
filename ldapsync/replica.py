"""``bootserverd ldap-slave configure|status``: make the local slapd a syncrepl consumer of
the central directory, and show how far behind it is.

configure reads the local cn=config over ldapi (SASL EXTERNAL: run it as root), plans the
changes that are missing and applies them in a safe order — the syncprov module, the
bootserverd schema (before any replicated entry can need it), the indexes (macAddress,
entryUUID, entryCSN), ``size=unlimited`` for the daemon's DN, a rootdn for the consumer,
the syncprov overlay (bootserverd itself follows the local replica with syncrepl), and
the olcSyncrepl line last. ``--dry-run`` prints the LDIF instead. Running it again
changes nothing.

status compares the contextCSN of the local replica and of the centre: the lag is the age
difference of the newest change each has seen.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ldapsync.consumer import describe
from ldapsync.mapping import normalize_dn
from ldapsync.replication import LagTracker
from ldapsync.syncrepl_conf import is_loopback, provider_from, strip_index

SCHEMA_FILES = (Path(__file__).resolve().parent.parent / "etc" / "ldap" / "bootserverd.ldif",
                Path("/usr/share/bootserverd/ldap/bootserverd.ldif"))
REQUIRED_INDEXES = ("macAddress", "entryUUID", "entryCSN")
RID = "101"


class SlaveError(Exception):
    pass


@dataclass(frozen=True)
class Options:
    central: str
    base: str
    bind_dn: str
    password: str
    daemon_dn: str
    ca_file: str | None = None
    starttls: bool = True
    retry: str = "5 5 60 +"


@dataclass(frozen=True)
class LocalConfig:
    """What configure needs to know of the local cn=config."""
    modules: dict[str, tuple[str, ...]]               # module list DN → olcModuleLoad values
    schemas: tuple[str, ...]                          # schema names without {n}: core, cosine, ...
    database_dn: str | None
    database: dict[str, tuple[str, ...]] = field(default_factory=dict)   # its attributes
    overlays: tuple[str, ...] = ()                    # overlay names without {n}


@dataclass(frozen=True)
class Change:
    dn: str
    kind: str                                         # "add" | "modify"
    lines: tuple[tuple[str, str, tuple[str, ...]], ...]   # add: (attr, "", values); modify: (op, attr, values)


def _quote(value: str) -> str:
    if re.search(r'[\s"]', value):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def syncrepl_line(opts: Options) -> str:
    parts = [f"rid={RID}", f"provider={opts.central}", "bindmethod=simple", f"binddn={_quote(opts.bind_dn)}",
             f"credentials={_quote(opts.password)}", f"searchbase={_quote(opts.base)}",
             "type=refreshAndPersist", f'retry="{opts.retry}"', "timeout=10", "network-timeout=10",
             "keepalive=240:10:30", "schemachecking=on"]
    if not opts.central.lower().startswith("ldaps://") and opts.starttls:
        parts.append("starttls=critical")
    if opts.ca_file:
        parts += [f"tls_cacert={_quote(opts.ca_file)}", "tls_reqcert=demand"]
    return " ".join(parts)


def plan(local: LocalConfig, opts: Options, schema_ldif: str) -> list[Change]:
    """The changes that make ``local`` a consumer as ``opts`` says; [] when it is one already."""
    if not opts.central.lower().startswith("ldaps://") and not opts.starttls and not is_loopback(opts.central):
        raise SlaveError(f"{opts.central} is neither ldaps:// nor loopback: STARTTLS cannot be turned off")
    missing = [s for s in ("core", "cosine", "nis") if s not in local.schemas]
    if missing:
        raise SlaveError(f"the local slapd lacks the {', '.join(missing)} schema; load it first "
                         "(cosine before nis)")
    if local.database_dn is None:
        raise SlaveError(f"the local slapd has no database for {opts.base}; create one "
                         "(dpkg-reconfigure slapd, domain matching the base)")
    changes: list[Change] = []
    loaded = {strip_index(v).removesuffix(".la") for values in local.modules.values() for v in values}
    if "syncprov" not in loaded:
        if local.modules:
            changes.append(Change(next(iter(local.modules)), "modify", (("add", "olcModuleLoad", ("syncprov",)),)))
        else:
            changes.append(Change("cn=module,cn=config", "add", (("objectClass", "", ("olcModuleList",)),
                                                                   ("cn", "", ("module",)),
                                                                   ("olcModuleLoad", "", ("syncprov",)))))
    if "bootserverd" not in local.schemas:
        changes.append(_schema_change(schema_ldif))
    db, attrs = local.database_dn, local.database
    mods = []
    if not attrs.get("olcRootDN"):
        # a consumer writes as its database's rootdn; one without a password cannot be bound to
        mods.append(("replace", "olcRootDN", (f"cn=syncrepl,{opts.base}",)))
    indexed = {name.strip().lower() for value in attrs.get("olcDbIndex", ())
               for name in value.split()[0].split(",")}
    add_index = tuple(f"{name} eq" for name in REQUIRED_INDEXES if name.lower() not in indexed)
    if add_index:
        mods.append(("add", "olcDbIndex", add_index))
    limit = f'dn.exact="{opts.daemon_dn}" size=unlimited time=unlimited'
    if not any(opts.daemon_dn.lower() in strip_index(v).lower() and "size=unlimited" in v
               for v in attrs.get("olcLimits", ())):
        mods.append(("add", "olcLimits", (limit,)))
    if mods:
        changes.append(Change(db, "modify", tuple(mods)))
    if "syncprov" not in local.overlays:
        changes.append(Change(f"olcOverlay=syncprov,{db}", "add", (
            ("objectClass", "", ("olcOverlayConfig", "olcSyncProvConfig")), ("olcOverlay", "", ("syncprov",)),
            ("olcSpCheckpoint", "", ("100 10",)), ("olcSpSessionlog", "", ("10000",)))))
    line = syncrepl_line(opts)
    if tuple(strip_index(v) for v in attrs.get("olcSyncrepl", ())) != (line,):
        changes.append(Change(db, "modify", (("replace", "olcSyncrepl", (line,)),)))
    return changes


def _schema_change(text: str) -> Change:
    """bootserverd.ldif (one entry, continuation lines) → an add Change."""
    lines: list[str] = []
    for raw in text.splitlines():
        if raw.startswith("#") or not raw.strip():
            continue
        if raw.startswith(" ") and lines:
            lines[-1] += raw[1:]
        else:
            lines.append(raw)
    dn = lines[0].split(":", 1)[1].strip()
    values: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        values.setdefault(name.strip(), []).append(value.strip())
    return Change(dn, "add", tuple((name, "", tuple(v)) for name, v in values.items()))


def to_ldif(changes: list[Change]) -> str:
    out = []
    for change in changes:
        out += [f"dn: {change.dn}", f"changetype: {change.kind}"]
        if change.kind == "add":
            out += [f"{attr}: {v}" for attr, _, values in change.lines for v in values]
        else:
            for op, attr, values in change.lines:
                out += [f"{op}: {attr}"] + [f"{attr}: {v}" for v in values] + ["-"]
        out.append("")
    return "\n".join(out)


# -- the I/O side (python-ldap) --

def _connect(uri: str, bind_dn: str | None = None, password: str | None = None, starttls: bool = False,
             ca_file: str | None = None):
    import ldap
    conn = ldap.initialize(uri)
    conn.set_option(ldap.OPT_NETWORK_TIMEOUT, 5.0)
    conn.set_option(ldap.OPT_TIMEOUT, 10.0)
    conn.set_option(ldap.OPT_REFERRALS, 0)
    if ca_file:
        conn.set_option(ldap.OPT_X_TLS_CACERTFILE, ca_file)
        conn.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    if starttls:
        conn.start_tls_s()
    if bind_dn:
        conn.simple_bind_s(bind_dn, password or "")
    elif uri.startswith("ldapi:"):
        conn.sasl_external_bind_s()
    return conn


def _text(values) -> tuple[str, ...]:
    return tuple(v.decode("utf-8") for v in values)


def read_local(conn, base: str) -> LocalConfig:
    import ldap
    modules = {dn: _text(a.get("olcModuleLoad", ())) for dn, a in
               conn.search_s("cn=config", ldap.SCOPE_ONELEVEL, "(objectClass=olcModuleList)", ["olcModuleLoad"])}
    schemas = tuple(strip_index(_text(a["cn"])[0]) for _, a in
                    conn.search_s("cn=schema,cn=config", ldap.SCOPE_ONELEVEL, "(objectClass=olcSchemaConfig)", ["cn"]))
    database_dn, database, overlays = None, {}, ()
    for dn, a in conn.search_s("cn=config", ldap.SCOPE_ONELEVEL, "(olcSuffix=*)"):
        if any(normalize_dn(s) == normalize_dn(base) for s in _text(a.get("olcSuffix", ()))):
            database_dn, database = dn, {k: _text(v) for k, v in a.items()}
            overlays = tuple(strip_index(_text(o["olcOverlay"])[0]) for _, o in
                             conn.search_s(dn, ldap.SCOPE_ONELEVEL, "(objectClass=olcOverlayConfig)", ["olcOverlay"]))
    return LocalConfig(modules, schemas, database_dn, database, overlays)


def apply(conn, changes: list[Change]) -> None:
    import ldap
    ops = {"add": ldap.MOD_ADD, "replace": ldap.MOD_REPLACE, "delete": ldap.MOD_DELETE}
    for change in changes:
        if change.kind == "add":
            conn.add_s(change.dn, [(attr, [v.encode() for v in values]) for attr, _, values in change.lines])
        else:
            conn.modify_s(change.dn, [(ops[op], attr, [v.encode() for v in values])
                                      for op, attr, values in change.lines])


def context_csn(conn, base: str) -> list[str]:
    import ldap
    result = conn.search_s(base, ldap.SCOPE_BASE, "(objectClass=*)", ["contextCSN"])
    return sorted(_text(result[0][1].get("contextCSN", ()))) if result else []


# -- command line --

def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bootserverd ldap-slave",
                                     description="configure the local slapd as a replica of the centre")
    sub = parser.add_subparsers(dest="command", required=True)
    conf = sub.add_parser("configure", help="write the syncrepl consumer configuration into cn=config")
    conf.add_argument("--central", required=True, help="the central directory, ldaps:// or ldap:// (STARTTLS)")
    conf.add_argument("--base", required=True)
    conf.add_argument("--bind-dn", required=True, help="the DN the replica binds to the centre as")
    conf.add_argument("--password-file", required=True, type=Path)
    conf.add_argument("--ca-file", help="CA certificate(s) to verify the centre with")
    conf.add_argument("--daemon-dn", default=None,
                      help="the DN bootserverd binds to the replica as (gets size=unlimited); "
                           "default cn=bootserverd,BASE")
    conf.add_argument("--local", default="ldapi:///", help="the local slapd (default ldapi:///)")
    conf.add_argument("--no-starttls", action="store_true", help="only for a loopback --central (tests)")
    conf.add_argument("--dry-run", action="store_true", help="print the LDIF, change nothing")
    stat = sub.add_parser("status", help="compare the replica's contextCSN with the centre's")
    stat.add_argument("--local", default="ldapi:///")
    stat.add_argument("--base", help="default: the replicated base in the local olcSyncrepl")
    stat.add_argument("--central", help="default: the provider in the local olcSyncrepl")
    stat.add_argument("--ca-file")
    args = parser.parse_args(argv)
    import ldap
    try:
        return _configure(args) if args.command == "configure" else _status(args)
    except SlaveError as exc:
        print(f"bootserverd ldap-slave: {exc}", file=sys.stderr)
        return 2
    except ldap.LDAPError as exc:
        print(f"bootserverd ldap-slave: {describe(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bootserverd ldap-slave: {exc}", file=sys.stderr)
        return 2


def _configure(args) -> int:
    password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    opts = Options(central=args.central, base=args.base, bind_dn=args.bind_dn, password=password,
                   daemon_dn=args.daemon_dn or f"cn=bootserverd,{args.base}", ca_file=args.ca_file,
                   starttls=not args.no_starttls)
    schema = next((p for p in SCHEMA_FILES if p.is_file()), None)
    if schema is None:
        raise SlaveError("bootserverd.ldif not found in " + " or ".join(map(str, SCHEMA_FILES)))
    conn = _connect(args.local)
    try:
        changes = plan(read_local(conn, args.base), opts, schema.read_text(encoding="utf-8"))
        if args.dry_run:
            # the password stays out of terminals and tool logs: the LDIF is for reading
            text = re.sub(r'credentials=("(?:[^"\\]|\\.)*"|\S+)', "credentials=********", to_ldif(changes))
            print("# credentials masked; run without --dry-run to apply\n" + text if changes
                  else "# nothing to change", end="")
            return 0
        apply(conn, changes)
    finally:
        conn.unbind_s()
    print(f"{len(changes)} change(s) applied; the replica follows {args.central}" if changes
          else "already configured; nothing changed")
    return 0


def _status(args) -> int:
    import ldap
    local = _connect(args.local)
    try:
        provider: dict[str, str] = {}
        if not (args.central and args.base):
            found = local.search_s("cn=config", ldap.SCOPE_ONELEVEL, "(olcSyncrepl=*)", ["olcSyncrepl", "olcSuffix"])
            if not found:
                raise SlaveError("the local slapd replicates nothing (no olcSyncrepl); give --central and --base")
            provider = provider_from(strip_index(_text(found[0][1]["olcSyncrepl"])[0]))
        base = args.base or provider["searchbase"]
        local_csn = context_csn(local, base)
    finally:
        local.unbind_s()
    central_uri = args.central or provider["provider"]
    central = _connect(central_uri, provider.get("binddn"), provider.get("credentials"),
                       starttls=provider.get("starttls", "no").startswith("critical") or
                       provider.get("starttls") == "yes", ca_file=args.ca_file or provider.get("tls_cacert"))
    try:
        central_csn = context_csn(central, base)
    finally:
        central.unbind_s()
    # the same rule as /status and bootserverd_directory_lag_seconds (ldapsync/replication.py)
    tracker = LagTracker(warn_after=float("inf"), started=time.time())
    tracker.observe(time.time(), local_csn, central_csn)
    lag = tracker.lag(time.time())
    print(f"centre  {central_uri}: contextCSN {' '.join(central_csn) or '-'}")
    print(f"replica {args.local}: contextCSN {' '.join(local_csn) or '-'}")
    if tracker.state() == "in sync":
        print("in sync (lag 0 s)")
        return 0
    print(f"replication lag: {lag:.1f} s (the replica lacks changes the centre made since then)")
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
