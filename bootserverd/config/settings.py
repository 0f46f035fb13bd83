"""The daemon's configuration: one YAML file → frozen dataclasses (see docs/config.md).

Relative paths resolve against the config file's directory. Every problem is reported at
once as ``file:line: dotted.key: what is wrong``; the CLI then exits with status 2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import warnings
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from bootserverd.config.schema import Context, Problem, SchemaError, build, load_document, parse_ipv4

DEFAULT_PATH = Path("/etc/bootserverd/bootserverd.yaml")


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listen(value: Any, ctx: Context) -> Listen:
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"must be ADDRESS:PORT like 0.0.0.0:69, not {value!r}")
    host, _, port_text = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (use 0.0.0.0 for every interface)") from None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} is not a number from 1 to 65535")
    return Listen(host, int(port_text))


def _window(value: Any) -> str:
    from bootserverd.images.diffs import parse_window
    parse_window(str(value))               # raises ValueError with the reason
    return str(value)


def _listen(default: str) -> Any:
    host, port = default.rsplit(":", 1)
    return field(default=Listen(host, int(port)), metadata={"parse": parse_listen})


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(b|bit|byte|bytes)?(?:/s)?\s*$", re.IGNORECASE)
_SCALE = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_rate(value: Any, ctx: Context | None = None) -> float:
    """Bytes per second from 40000000, "40MB/s", "300Mbit/s" or "0" (no limit)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a rate like \"40MB/s\" or \"300Mbit/s\" (0: no limit), not {value!r}")
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError(f"must not be negative, not {value!r}")
        return float(value)
    m = _RATE.match(str(value))
    if not m:
        raise ValueError(f"must be a rate like \"40MB/s\" or \"300Mbit/s\" (0: no limit), not {value!r}")
    number, prefix, unit = float(m.group(1)), m.group(2).lower(), (m.group(3) or "B")
    bits = unit.lower() == "bit" or unit == "b"
    return number * _SCALE[prefix] / (8 if bits else 1)


def parse_pool(value: Any, ctx: Context) -> tuple[tuple[IPv4Address, IPv4Address], ...]:
    ranges = value if isinstance(value, list) else [value]
    out = []
    for text in ranges:
        first, sep, last = str(text).partition("-")
        if not sep:
            raise ValueError(f"pool range must be FIRST-LAST like 10.0.0.100-10.0.0.200, not {text!r}")
        low, high = parse_ipv4(first.strip()), parse_ipv4(last.strip())
        if low > high:
            raise ValueError(f"pool range {text!r} ends before it starts")
        out.append((low, high))
    return tuple(out)


def parse_reserve(value: Any, ctx: Context) -> int | str:
    """A count of addresses (20) or a share of the pool ("10%"), kept as written."""
    problem = f"must be a count of addresses like 20 or a share of the pool like \"10%\", not {value!r}"
    if isinstance(value, bool):
        raise ValueError(problem)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(problem)
        return value
    text = str(value).strip()
    if not text.endswith("%"):
        raise ValueError(problem)
    try:
        share = float(text[:-1])
    except ValueError:
        raise ValueError(problem) from None
    if not 0 <= share <= 100:
        raise ValueError(f"share {text} must be from 0% to 100%")
    return text


@dataclass(frozen=True)
class ServerConfig:
    address: IPv4Address = field(metadata={"required": True})
    state_dir: Path = Path("/var/lib/bootserverd")
    log_format: str = field(default="text", metadata={"choices": ("text", "json")})
    log_level: str = field(default="info", metadata={"choices": ("debug", "info", "warn", "error")})
    user: str | None = None          # started as root: switch to this user once sockets are open
    group: str | None = None
    allow_root: bool = False         # keep running as root (not recommended)
    # the boot report (status page, `status --device`, bootserverd_boots_total): a boot quiet
    # this long before its NBD root is attached stopped; a root in use this long booted
    boot_stall_seconds: float = field(default=60.0, metadata={"min": 1.0, "max": 86400.0})
    booted_after_seconds: float = field(default=30.0, metadata={"min": 0.0, "max": 86400.0})


def _time_of_day(value: Any) -> str | None:
    from bootserverd.images.prewarm import parse_at
    if value is None:
        return None
    parse_at(str(value))                   # raises ValueError with the reason
    return str(value).strip()


@dataclass(frozen=True)
class PrewarmConfig:
    """images.prewarm: bring each image's boot working set into the page cache (docs/images.md)."""
    enabled: bool = True
    at: str | None = field(default="06:30", metadata={"parse": lambda v, ctx: _time_of_day(v)})
    max_share: float = field(default=0.5, metadata={"min": 0.0, "max": 0.95})
    max_seconds: float = field(default=900.0, metadata={"min": 1.0, "max": 86400.0})
    residency_interval: float = field(default=60.0, metadata={"min": 1.0, "max": 86400.0})


@dataclass(frozen=True)
class ImagesConfig:
    dir: Path = field(default=Path("/srv/bootserverd/images"), metadata={"must_exist": "dir"})
    default: str | None = None
    rescan_interval: float = field(default=60.0, metadata={"min": 1.0, "max": 86400.0})
    settle_seconds: float = field(default=2.0, metadata={"min": 0.0, "max": 3600.0})
    prewarm: PrewarmConfig = PrewarmConfig()


@dataclass(frozen=True)
class TftpConfig:
    enabled: bool = True
    listen: Listen = _listen("0.0.0.0:69")
    root: Path = field(default=Path("/srv/bootserverd/tftp"), metadata={"must_exist": "dir"})
    max_blksize: int = field(default=1468, metadata={"min": 512, "max": 65464})
    max_windowsize: int = field(default=64, metadata={"min": 1, "max": 65535})
    # a classroom or two of PXE ROMs at once (dnsmasq's tftp-max default of 50 fails them)
    max_transfers: int = field(default=1024, metadata={"min": 1, "max": 100000})
    max_transfers_per_client: int = field(default=8, metadata={"min": 1, "max": 10000})
    timeout: float = field(default=1.0, metadata={"min": 0.05, "max": 255.0})
    retries: int = field(default=5, metadata={"min": 1, "max": 100})


def parse_trace_device(value: Any, ctx: Context) -> str:
    """nbd.trace.devices[]: a MAC (normalized) or a client's IPv4 address."""
    from bootserverd.model.objects import normalize_mac
    text = str(value).strip()
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        pass
    try:
        return normalize_mac(text)
    except ValueError:
        raise ValueError(f"must be a MAC like 52:54:00:12:34:56 or an IPv4 address, not {value!r}") from None


@dataclass(frozen=True)
class NbdTraceImage:
    image: str = field(default="", metadata={"required": True})
    sessions: int = field(default=1, metadata={"min": 0, "max": 10000})


@dataclass(frozen=True)
class NbdTraceConfig:
    """Recording of NBD sessions' requests (nbd/trace.py); off unless a device or image is named."""
    devices: tuple[str, ...] = field(default=(), metadata={"parse": lambda v, ctx: tuple(
        parse_trace_device(d, ctx) for d in (v if isinstance(v, list) else [] if v is None else [v]))})
    images: tuple[NbdTraceImage, ...] = ()
    max_requests: int = field(default=100_000, metadata={"min": 1, "max": 10_000_000})
    keep_files: int = field(default=50, metadata={"min": 1, "max": 100_000})
    max_seconds: float = field(default=600.0, metadata={"min": 1.0, "max": 86400.0})


@dataclass(frozen=True)
class NbdConfig:
    enabled: bool = True
    listen: Listen = _listen("0.0.0.0:10809")
    max_connections: int = field(default=512, metadata={"min": 1, "max": 100000})
    max_connections_per_client: int = field(default=16, metadata={"min": 1, "max": 10000})
    handshake_timeout: float = field(default=10.0, metadata={"min": 0.1, "max": 3600.0})
    # threads that send reads not in memory and large reads (sendfile), beside the reactor; 0: none
    send_threads: int = field(default=8, metadata={"min": 0, "max": 64})
    trace: NbdTraceConfig = NbdTraceConfig()


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool = True
    listen: Listen = _listen("0.0.0.0:8080")
    # a download that makes no progress this long is aborted (client gone or stuck)
    stall_timeout: float = field(default=60.0, metadata={"min": 1.0, "max": 86400.0})
    sendfile: bool = True                     # os.sendfile fast path for plain TCP
    # connections one address may hold at once; more get a 429 and are closed (slowloris)
    max_connections_per_client: int = field(default=16, metadata={"min": 1, "max": 100000})
    # seconds from connecting (or the end of the previous response) to a complete request
    header_timeout: float = field(default=15.0, metadata={"min": 0.5, "max": 3600.0})
    diff_workers: int = field(default=1, metadata={"min": 1, "max": 64})
    diff_block_size: int = field(default=4096, metadata={"min": 256, "max": 1 << 20})
    diff_nice: int = field(default=10, metadata={"min": 0, "max": 19})
    diff_cache_max_bytes: int = field(default=50 << 30, metadata={"min": 1 << 20, "max": 1 << 50})
    # "HH:MM-HH:MM" local time when diffs are built ahead of time (None: any time)
    diff_prebuild_window: str | None = field(default=None, metadata={"parse": lambda v, ctx: _window(v)})
    # who may see the status page (/ and /ui/...): CIDRs; None: loopback and the DHCP subnets
    ui_allow: tuple[IPv4Network, ...] | None = None
    # image, diff and zsync downloads (laptop updates) together, bytes/s ("40MB/s", "300Mbit/s");
    # boot traffic (kernels, NBD, TFTP) never waits for it; 0: no limit
    update_rate: float = field(default=40e6, metadata={"parse": parse_rate})


@dataclass(frozen=True)
class SubnetConfig:
    network: IPv4Network = field(metadata={"required": True})
    pool: tuple[tuple[IPv4Address, IPv4Address], ...] = field(default=(), metadata={"parse": parse_pool})
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    ntp: tuple[IPv4Address, ...] = ()
    lease_time: int = field(default=3600, metadata={"min": 60, "max": 365 * 86400})
    # pool addresses unknown clients may not take: a count (20) or a share of the pool ("10%")
    reserve_for_known: int | str = field(default=0, metadata={"parse": parse_reserve})

    def check(self, ctx: Context, key: str) -> None:
        for low, high in self.pool:
            if low not in self.network or high not in self.network:
                ctx.problem(f"{key}.pool", f"range {low}-{high} is not inside {self.network}")
        size = sum(int(high) - int(low) + 1 for low, high in self.pool)
        if isinstance(self.reserve_for_known, int) and self.reserve_for_known > size:
            ctx.problem(f"{key}.reserve_for_known",
                        f"{self.reserve_for_known} is more than the pool's {size} addresses")


def parse_split(value: Any, ctx: Context) -> float:
    """dhcp.split: the share of every pool the first of pair.servers offers from, 50 or "50%"."""
    text = str(value).strip().rstrip("%") if not isinstance(value, bool) else ""
    try:
        share = float(text)
    except ValueError:
        raise ValueError(f"must be a percentage like 50 or \"50%\", not {value!r}") from None
    if not 1 <= share <= 99:
        raise ValueError(f"must be from 1 to 99 (%), not {value!r}: each server needs a share")
    return share


@dataclass(frozen=True)
class DhcpConfig:
    enabled: bool = False
    mode: str = field(default="server", metadata={"choices": ("server", "proxy")})
    interfaces: tuple[str, ...] = ()
    authoritative: bool = True
    # MACs not in the inventory: allow (a pool address), deny (no answer) or pxe-only
    unknown_mac_policy: str = field(default="allow", metadata={"choices": ("allow", "deny", "pxe-only")})
    subnets: tuple[SubnetConfig, ...] = ()
    listen_port: int = field(default=67, metadata={"min": 1, "max": 65535})
    proxy_port: int = field(default=4011, metadata={"min": 1, "max": 65535})
    unicast_offers: bool = False     # unicast to yiaddr via a neighbour entry (needs CAP_NET_ADMIN)
    match_client_id: bool = False    # key leases on option 61 (RFC 2131) instead of the MAC
    decline_hold: float = field(default=600.0, metadata={"min": 0.0, "max": 86400.0})
    ping_check: bool = False         # ICMP echo a pool address before offering it (conflict probe)
    ping_timeout: float = field(default=1.0, metadata={"min": 0.05, "max": 10.0})
    # other DHCP servers expected on the served LANs (proxy mode: the school's own server; a
    # split-scope partner): their replies are not flagged as a rogue server's
    known_servers: tuple[IPv4Address, ...] = ()
    # seconds between two rogue-server probes (a DISCOVER on each interface); 0: no probe
    rogue_probe_interval: float = field(default=300.0, metadata={"min": 0.0, "max": 86400.0})
    # two boot servers (pair.servers): % of every pool the first offers from, the second the rest
    split: float | None = field(default=None, metadata={"parse": parse_split})

    def check(self, ctx: Context, key: str) -> None:
        if 0 < self.rogue_probe_interval < 1:
            ctx.problem(f"{key}.rogue_probe_interval",
                        f"must be 0 (no probe) or at least 1 second, not {self.rogue_probe_interval}")
        if not self.enabled:
            return
        if not self.interfaces:
            ctx.problem(f"{key}.interfaces", "name at least one interface when dhcp.enabled is true")
        if self.mode == "server" and not self.subnets:
            ctx.problem(f"{key}.subnets", "name at least one subnet when dhcp.mode is server")


@dataclass(frozen=True)
class LoadersConfig:
    """First-stage boot loader per firmware class (TFTP paths below tftp.root). UEFI x64 gets
    the signed chain (shim → GRUB, both signed), which boots with Secure Boot on or off."""
    bios: str = "undionly.kpxe"
    efi32: str = "ipxe-i386.efi"
    efi64: str = "shimx64.efi"
    arm64: str = "ipxe-arm64.efi"


@dataclass(frozen=True)
class BootConfig:
    loaders: LoadersConfig = LoadersConfig()
    unknown_clients: str = field(default="menu", metadata={"choices": ("menu", "ignore")})
    kernel_args: str = ""
    menu_timeout: int = field(default=5, metadata={"min": 0, "max": 3600})
    templates: Path | None = None
    # The site's GRUB has the http module (Ubuntu's signed GRUB, or one from grub-mkimage):
    # grub.cfg then fetches kernels over HTTP, TFTP if that fails. Debian's signed GRUB has
    # only tftp, and a failed HTTP try shows an error line on screen, so this is off by default.
    grub_http: bool = False


@dataclass(frozen=True)
class LdapConfig:
    uri: str = "ldapi:///"
    base: str = field(default="", metadata={"required": True})
    bind_dn: str | None = None
    password_file: Path | None = None
    profile: str = field(default="bootserverd", metadata={"choices": ("bootserverd", "puavo")})
    server_hostname: str | None = None   # this boot server's name in the directory (default: hostname)
    # replication lag: the centre the replica follows (default: the provider in the local
    # olcSyncrepl, when cn=config is readable), bound to with bind_dn/password_file as well
    central_uri: str | None = None
    ca_file: Path | None = None          # CA for STARTTLS/ldaps to the centre
    lag_check_interval: float = field(default=30.0, metadata={"min": 0.1, "max": 3600.0})
    lag_warn_seconds: float = field(default=300.0, metadata={"min": 0.0})


@dataclass(frozen=True)
class InventoryConfig:
    source: str = field(default="yaml", metadata={"choices": ("yaml", "ldap")})
    file: Path | None = field(default=None, metadata={"must_exist": "file"})
    ldap: LdapConfig | None = None
    poll_interval: float = field(default=1.0, metadata={"min": 0.1, "max": 3600.0})

    def check(self, ctx: Context, key: str) -> None:
        if self.source == "yaml" and self.file is None:
            ctx.problem(f"{key}.file", "is required when inventory.source is yaml")
        if self.source == "ldap" and self.ldap is None:
            ctx.problem(f"{key}.ldap", "is required when inventory.source is ldap")


@dataclass(frozen=True)
class PairConfig:
    """Two boot servers for one school, both reading this same file (docs/reliability.md)."""
    # each server's own address (not server.address, the VRRP one): the same list, in the same
    # order, in both servers' files; dhcp.split gives the first its share of every pool
    servers: tuple[IPv4Address, ...] = ()
    # which of servers this machine is; default: the one that is an address of this machine
    this_server: IPv4Address | None = None
    # the peer's HTTP base URL for comparing images; default http://<peer>:<http.listen port>
    peer_url: str | None = None
    check_interval: float = field(default=60.0, metadata={"min": 1.0, "max": 86400.0})

    @property
    def enabled(self) -> bool:
        return bool(self.servers)

    @property
    def peer(self) -> IPv4Address | None:
        others = [a for a in self.servers if a != self.this_server]
        return others[0] if self.this_server is not None and len(others) == 1 else None

    def check(self, ctx: Context, key: str) -> None:
        if self.servers and (len(self.servers) != 2 or self.servers[0] == self.servers[1]):
            ctx.problem(f"{key}.servers", "must name two different addresses, this server's "
                                          "and its peer's (the same list on both)")
        if self.this_server is not None and self.this_server not in self.servers:
            ctx.problem(f"{key}.this_server", f"{self.this_server} is not one of pair.servers")
        if self.peer_url is not None and not self.peer_url.startswith("http://"):
            ctx.problem(f"{key}.peer_url", f"must be an http:// URL, not {self.peer_url!r}")


def local_addresses() -> list[IPv4Address]:
    """Every IPv4 address of this machine (its network namespace), over netlink."""
    import socket
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        return [IPv4Address(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"))
                for a in ipr.get_addr(family=socket.AF_INET)]


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    path: Path = field(default=Path("-"), metadata={"internal": True})
    images: ImagesConfig = field(default_factory=ImagesConfig)
    tftp: TftpConfig = TftpConfig()
    nbd: NbdConfig = NbdConfig()
    http: HttpConfig = HttpConfig()
    dhcp: DhcpConfig = DhcpConfig()
    boot: BootConfig = BootConfig()
    inventory: InventoryConfig = InventoryConfig()
    pair: PairConfig = PairConfig()


ConfigError = SchemaError

# Renamed keys, still read under the old name with one warning per load: (section, old) → new.
RENAMED = {
    # read like boot.unknown_clients (the boot menu for unknown devices), a different setting
    ("dhcp", "unknown_clients"): "unknown_mac_policy",
}


def load(path: Path) -> Config:
    """Load and validate; raises ConfigError listing every problem."""
    path = Path(path)
    try:
        data, lines = load_document(path)
    except OSError as exc:
        raise ConfigError([Problem(str(path), None, "", f"cannot read: {exc.strerror}")]) from None
    except Exception as exc:  # yaml.YAMLError and friends: report where the parser stopped
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([Problem(str(path), line, "", f"not valid YAML: {exc}")]) from None
    ctx = Context(path.resolve(), lines)
    if isinstance(data, dict) and "images" not in data:      # a bare scalar: build() says so
        ctx.problem("images", "is required (images.dir names the image directory)")
    written_as = _rename_old_keys(data, ctx)
    config = build(Config, data, "", ctx)
    if config is not None:
        config = _with_path(config, path.resolve())
        _check_relations(config, ctx)
        config = _resolve_pair(config, ctx)
    if ctx.problems:
        raise ConfigError([dataclasses.replace(p, key=written_as.get(p.key, p.key))
                           for p in ctx.problems])
    return config


def _rename_old_keys(data: Any, ctx: Context) -> dict[str, str]:
    """Move each key of RENAMED found in `data` to its new name, warning once; returns new
    dotted key → old, so a problem is reported under the name the file uses."""
    written_as: dict[str, str] = {}
    for (section, old), new in RENAMED.items():
        part = data.get(section) if isinstance(data, dict) else None
        if not isinstance(part, dict) or old not in part:
            continue
        old_key, new_key = f"{section}.{old}", f"{section}.{new}"
        value = part.pop(old)
        if new in part:
            ctx.problem(old_key, f"is the old name of {new_key}, which is given too: remove it")
            continue
        part[new] = value
        ctx.lines[new_key] = ctx.lines.get(old_key, 0)
        written_as[new_key] = old_key
        warnings.warn_explicit(f"{old_key} is now called {new_key}; the old name still works "
                               f"but will go", FutureWarning, str(ctx.path), ctx.lines[new_key])
    return written_as


def _with_path(config: Config, path: Path) -> Config:
    return dataclasses.replace(config, path=path)


def _resolve_pair(config: Config, ctx: Context) -> Config:
    """Two boot servers: which one this is (pair.this_server, else found among this machine's
    addresses), and DHCP split whenever both serve addresses."""
    from dhcp.split import identify
    pair, dhcp = config.pair, config.dhcp
    if dhcp.split is not None and not pair.enabled:
        ctx.problem("dhcp.split", "needs pair.servers (the two servers that split the pools)")
    if not pair.enabled or len(pair.servers) != 2:
        return config
    if dhcp.enabled and dhcp.mode == "server" and dhcp.split is None:
        ctx.problem("dhcp.split", "is required when pair.servers is set and dhcp serves "
                                  "addresses (e.g. 50): two servers must not offer from one pool")
    if pair.this_server is None:
        try:
            local = local_addresses()
        except Exception as exc:             # no netlink: say so, do not guess
            ctx.problem("pair.servers", f"cannot read this machine's addresses ({exc}): "
                                        f"set pair.this_server")
            return config
        index, why = identify(pair.servers, local)
        if index is None:
            ctx.problem("pair.servers", why)
            return config
        config = dataclasses.replace(config, pair=dataclasses.replace(
            pair, this_server=pair.servers[index]))
    return config


def _check_relations(config: Config, ctx: Context) -> None:
    """Rules that span sections: what each section's own check cannot see."""
    if not config.server.state_dir.is_dir() and not config.server.state_dir.parent.is_dir():
        ctx.problem("server.state_dir", f"neither {config.server.state_dir} nor its parent exists")
    listeners = [(name, section.listen) for name, section in
                 (("tftp", config.tftp), ("nbd", config.nbd), ("http", config.http)) if section.enabled]
    seen: dict[int, str] = {}
    for name, listen in listeners:
        if listen.port in seen and name != "tftp" and seen[listen.port] != "tftp":
            ctx.problem(f"{name}.listen", f"port {listen.port} is already used by {seen[listen.port]}.listen")
        seen.setdefault(listen.port, name)
