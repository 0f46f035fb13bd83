"""The ``bootserverd`` command: run, check-config, and the operator's tools."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from bootserverd import __version__
from bootserverd.config import settings as configmod
from bootserverd.config.schema import SchemaError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bootserverd", description="School boot server: DHCP, TFTP, NBD, HTTP.")
    parser.add_argument("--version", action="version", version=f"bootserverd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "run the daemon in the foreground"),
                       ("check-config", "validate the config and inventory and print a summary"),
                       ("leases", "list the DHCP leases (MAC, IP, hostname, expiry)"),
                       ("status", "the running daemon's status, or a device's last boot (--device MAC)"),
                       ("selftest", "exercise DHCP, TFTP, NBD and HTTP as a client would, from here"),
                       ("populate-tftp", "put Debian's boot loaders (ipxe, pxelinux, ...) into tftp.root")):
        # also: `bootserverd ldap-slave configure|status` (ldapsync/replica.py)
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--config", "-c", type=Path, default=configmod.DEFAULT_PATH,
                         help=f"config file (default {configmod.DEFAULT_PATH})")
        if name == "leases":
            sub.add_argument("--all", action="store_true", help="also released, declined and expired rows")
        if name == "status":
            sub.add_argument("--device", metavar="MAC", help="timeline of this device's last boot")
        if name == "selftest":
            sub.add_argument("--interface", metavar="IF", help="where to send the DHCP DISCOVER "
                             "(default: the first of dhcp.interfaces)")
    trace = commands.add_parser("trace", help="recorded NBD sessions (nbd.trace in the config)")
    what = trace.add_subparsers(dest="trace_command", required=True)
    for name, text in (("list", "one line per recorded session, oldest first"),
                       ("show", "one trace: its requests, or --summary")):
        sub = what.add_parser(name, help=text)
        sub.add_argument("--config", "-c", type=Path, default=configmod.DEFAULT_PATH,
                         help=f"config file (default {configmod.DEFAULT_PATH})")
        if name == "show":
            sub.add_argument("name", help="a trace's file name (or a unique prefix of it) from `trace list`")
            sub.add_argument("--summary", action="store_true", help="totals: requests, MB read, distinct MB")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "ldap-slave":      # its own argument parser
        from ldapsync.replica import main as ldap_slave
        return ldap_slave(argv[1:])
    args = _parser().parse_args(argv)
    try:
        config = configmod.load(args.config)
    except configmod.ConfigError as exc:
        print(f"bootserverd: configuration errors, nothing started:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "check-config":
        return check_config(config)
    if args.command == "leases":
        return leases(config, args.all)
    if args.command == "status":
        return status(config, args.device)
    if args.command == "selftest":
        return selftest(config, args.interface)
    if args.command == "populate-tftp":
        return populate_tftp(config)
    if args.command == "trace":
        from bootserverd.tools import trace
        if args.trace_command == "list":
            return trace.list_traces(config.server.state_dir)
        return trace.show_trace(config.server.state_dir, args.name, args.summary)
    return run(config)


def leases(config: configmod.Config, all_rows: bool) -> int:
    from dhcp.journal import list_leases
    rows = list_leases(config.server.state_dir / "leases", all_rows=all_rows)
    print(f"{'MAC':17}  {'IP':15}  {'HOSTNAME':20}  EXPIRES (UTC)")
    for mac, ip, hostname, expiry in rows:
        print(f"{mac:17}  {ip!s:15}  {hostname or '-':20}  {expiry:%Y-%m-%d %H:%M:%S}")
    return 0


def status(config: configmod.Config, device: str | None) -> int:
    import json

    from bootserverd.boot.report import format_timeline
    from bootserverd.model.objects import normalize_mac
    from bootserverd.tools.selftest import http_status
    if not config.http.enabled:
        print("bootserverd: status is read over HTTP; http.enabled is false", file=sys.stderr)
        return 1
    try:
        data = http_status(config)
    except OSError as exc:
        print(f"bootserverd: cannot read /status (is the daemon running?): {exc}", file=sys.stderr)
        return 1
    if device is None:
        print(json.dumps(data, indent=2, sort_keys=True))
        return 0
    try:
        mac = normalize_mac(device)
    except ValueError:
        print(f"bootserverd: {device!r} is not a MAC address", file=sys.stderr)
        return 2
    report = data.get("boot", {}).get("recent", {}).get(mac)
    if report is None:
        print(f"{mac}: no boot seen since the daemon started (or not among the recent devices)")
        return 1
    print(format_timeline(report))
    return 0


def selftest(config: configmod.Config, interface: str | None) -> int:
    from bootserverd.tools.selftest import format_table, run_selftest
    checks = run_selftest(config, interface)
    print(format_table(checks))
    return 0 if checks and all(c.ok for c in checks) else 1


def populate_tftp(config: configmod.Config) -> int:
    from bootserverd.tools.populate import populate
    root = config.tftp.root
    missing = 0
    for loader, what in populate(root):
        missing += what.startswith("missing")
        print(f"{loader.name:16} {what:28} {loader.package:22} {loader.role}")
    print(f"TFTP root {root}: {len(tuple(root.iterdir()))} entries"
          + (f"; {missing} loaders not installed" if missing else ""))
    return 0


def check_config(config: configmod.Config) -> int:
    from bootserverd.app import make_source
    from bootserverd.images.store import scan_summary
    try:
        directory = make_source(config, clock=None).load()
    except SchemaError as exc:
        print(f"bootserverd: inventory errors:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{config.path}: OK")
    print(f"server address {config.server.address}, state in {config.server.state_dir}")
    for name in ("dhcp", "tftp", "nbd", "http"):
        section = getattr(config, name)
        where = getattr(section, "listen", None) or (f"{section.mode} on {', '.join(section.interfaces)}"
                                                      if name == "dhcp" else "")
        print(f"  {name:5} {'on ' if section.enabled else 'off'} {where if section.enabled else ''}".rstrip())
    images = scan_summary(config.images.dir)
    print(f"images in {config.images.dir}: {len(images)}")
    for name, size, problem in images:
        print(f"  {name}  {size} bytes  {'SKIPPED: ' + problem if problem else 'ok'}")
    types = Counter(d.type or directory.defaults.type or "untyped" for d in directory.devices)
    summary = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
    print(f"devices known: {len(directory.devices)}" + (f" ({summary})" if summary else ""))
    default = config.images.default or directory.defaults.image
    if default and default not in {name for name, _, problem in images if not problem}:
        print(f"warning: default image {default} is not in {config.images.dir}")
    return 0


def run(config: configmod.Config) -> int:
    from twisted.internet import reactor

    from bootserverd.app import BootServer
    from bootserverd.ops.logsetup import start_logging
    from bootserverd.ops.privileges import drop_privileges
    from bootserverd.ops.sdnotify import inherited_fds, notify
    from twisted.logger import Logger

    log = Logger(namespace="bootserverd.app")
    start_logging(config.server.log_format, config.server.log_level)
    try:
        app = BootServer(config, reactor, inherited_fds=inherited_fds())
    except SchemaError as exc:
        print(f"bootserverd: inventory errors, nothing started:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    status = {"code": 0}

    def drop():
        allow_root = config.server.allow_root or os.environ.get("BOOTSERVERD_ALLOW_ROOT") == "1"
        done = drop_privileges(config.server.user, config.server.group, allow_root,
                               [config.server.state_dir])
        if done:
            log.info("{what}", what=done)

    def start():
        try:
            app.start(after_listen=drop)
        except Exception as exc:  # a port already in use, a missing interface, root refused, ...
            log.critical("cannot start: {err}", err=exc)
            status["code"] = 1
            stop_once()
            return
        notify("READY=1")

    def on_hup(signum, frame):
        reactor.callFromThread(app.reload)

    def stop_once():
        if reactor.running and not status.get("stopping"):
            status["stopping"] = True
            reactor.stop()

    def on_term(signum, frame):
        # Twisted's own handler raises ReactorNotRunning on a second SIGTERM/Ctrl-C.
        reactor.callFromThread(stop_once)

    def install_stop_handlers():
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def shutdown():
        notify("STOPPING=1")
        stopping = app.stop()
        stopping.addTimeout(4, reactor)   # SIGTERM must end us within 5 s
        stopping.addErrback(lambda f: log.warn("shutdown: {err}", err=f.getErrorMessage()))
        return stopping

    signal.signal(signal.SIGHUP, on_hup)
    reactor.callWhenRunning(install_stop_handlers)
    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", shutdown)
    reactor.run()
    log.info("bootserverd stopped")
    return status["code"]
