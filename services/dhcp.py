"""The DHCP service: loads the lease journal, opens :67 (and :4011 in proxy mode), follows
the served interfaces, answers through dhcp.machine, and watches for rogue DHCP servers
(dhcp.rogue, dhcp.watch). Public, for /status, /metrics and the status page: status(),
rogue_servers(), pools()."""

from __future__ import annotations

import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from bootserverd.ops.metrics import Metrics
from dhcp.icmp import IcmpProber
from dhcp.journal import GroupCommit, LeaseDB
from dhcp.leases import BOUND, OFFERED, LeaseTable, pool_size
from dhcp.machine import Machine, Policy, Subnet
from dhcp.netif import Interfaces, Neighbours
from dhcp.protocol import DhcpHandler, DhcpPort, open_socket
from dhcp.rogue import Detector, probe_mac
from dhcp.watch import RogueWatch


def _server_address(server) -> IPv4Address | None:
    address = getattr(server, "address", None)
    return IPv4Address(str(address)) if address else None


def _probe_mac(server) -> bytes | None:
    address = _server_address(server)
    return probe_mac(address) if address is not None else None


def _split(config, pair) -> tuple[float, bool] | None:
    """(dhcp.split, whether this server is the first of pair.servers), or None: no split."""
    if pair is None or not pair.enabled or config.split is None or pair.this_server is None:
        return None
    return config.split, pair.this_server == pair.servers[0]


def _known_servers(config, pair) -> frozenset:
    """Servers whose replies are expected: dhcp.known_servers and the split-scope peer."""
    peer = pair.peer if pair is not None and pair.enabled else None
    return frozenset(config.known_servers) | ({peer} if peer is not None else set())


def _policy(config, server, pair=None) -> Policy:
    address = getattr(server, "address", None)
    split = _split(config, pair)
    return Policy(mode=config.mode, authoritative=config.authoritative,
                  unknown_mac_policy=config.unknown_mac_policy,
                  subnets=tuple(Subnet.from_config(s, split) for s in config.subnets),
                  own_address=pair.this_server if split is not None else None,
                  server_address=IPv4Address(str(address)) if address else None,
                  unicast_offers=config.unicast_offers, decline_hold=config.decline_hold,
                  match_client_id=config.match_client_id,
                  ping_check=config.ping_check,
                  ping_timeout=config.ping_timeout, probe_mac=_probe_mac(server))


class DHCPService(Service):
    name = "dhcp"
    log = Logger(namespace="bootserverd.dhcp")

    def __init__(self, config, server, model, resolver, leasedb_path: Path, reactor=None,
                 on_lease: Callable | None = None, clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None, pair=None):
        """`pair`: config.PairConfig (two boot servers: split scope), None for one server."""
        from twisted.internet import reactor as default_reactor
        self.config = config
        self.server = server
        self.pair = pair
        self.model = model
        self.resolver = resolver
        self.leasedb_path = Path(leasedb_path)
        self.reactor = reactor or default_reactor
        self.on_lease = on_lease              # (lease, renewal): see BootReport.dhcp_lease
        self.clock = clock
        self.metrics = metrics
        self.ports: list[DhcpPort] = []
        self._reserved: frozenset[IPv4Address] = frozenset()
        self._reserved_counts: dict[tuple, int] = {}
        self.db: LeaseDB | None = None
        self.table: LeaseTable | None = None
        self.machine: Machine | None = None
        self.commit: GroupCommit | None = None
        self.interfaces: Interfaces | None = None
        self.handler: DhcpHandler | None = None
        self.prober: IcmpProber | None = None
        self.neighbours = Neighbours()
        self._unsubscribe: Callable[[], None] | None = None
        self.rogues = Detector(_known_servers(config, pair))   # outlives a SIGHUP, not a restart
        self.watch: RogueWatch | None = None
        self._unscrape: Callable[[], None] | None = None
        self._rogue_counted = dict(self.rogues.replies)  # what the counter has been given

    # -- reservations from the model (recomputed when the directory changes) ----------------
    def _inventory_changed(self, old=None, new=None) -> None:
        inventory = self.model.inventory
        self._reserved = frozenset(IPv4Address(d.ip) for d in inventory.devices if d.ip)
        self._reserved_counts = {}

    def _reserved_in(self, pool: tuple) -> int:
        """Devices' fixed IPs inside a pool (they are not free for the pool's clients)."""
        count = self._reserved_counts.get(pool)
        if count is None:
            count = self._reserved_counts[pool] = sum(
                1 for ip in self._reserved if any(lo <= ip <= hi for lo, hi in pool))
        return count

    def _reservation(self, mac: str) -> IPv4Address | None:
        device = self.model.inventory.device(mac)
        return IPv4Address(device.ip) if device is not None and device.ip else None

    def _interface_of(self, subnet: Subnet) -> str | None:
        for addrs in self.interfaces.by_index.values() if self.interfaces else ():
            for addr in addrs:
                if addr.address in subnet.network:
                    return addr.name
        return None   # served through a relay, or the interface has no address now

    def _live_rows(self) -> list:
        return [row for row in self.table.by_ip.values() if row.state != OFFERED]

    def active_leases(self) -> int:
        """Bound leases not yet expired (the bootserverd_dhcp_leases gauge, read at scrape)."""
        if self.table is None:
            return 0
        now = self.clock()
        return sum(1 for r in self.table.by_ip.values() if r.state == BOUND and r.expiry > now)

    # -- lifecycle ----------------------------------------------------------------------------
    def startService(self) -> None:
        # Interfaces before the journal: importing pyroute2 allocates enough to set off GC
        # passes, which then need not scan 50,000 lease rows (measured: 0.04 s of a restart).
        self.interfaces = Interfaces(tuple(self.config.interfaces), self.reactor)
        self.interfaces.start()
        started = time.monotonic()
        self.db = LeaseDB(self.leasedb_path)
        rows = self.db.load()
        self.table = LeaseTable(rows)
        self.log.info("{n} leases loaded ({a} active) from {p} in {s:.2f} s", n=len(rows),
                      a=self.active_leases(), p=self.leasedb_path, s=time.monotonic() - started)
        self._inventory_changed()
        self._unsubscribe = self.model.subscribe(self._inventory_changed)
        self.machine = Machine(_policy(self.config, self.server, self.pair), self.table,
                               self.resolver.resolve, self._reservation,
                               lambda ip: ip in self._reserved, self._reserved_in)
        self.commit = GroupCommit(self.db, self.reactor, self._live_rows, lambda: len(self.table))
        self.commit.start()
        self.handler = DhcpHandler(self.machine, self.commit, self.interfaces, self.clock,
                                   self.on_lease, self.neighbours,
                                   debug=getattr(self.server, "log_level", "info") == "debug")
        self._open_prober()
        # the packet socket is opened here, while we may still hold CAP_NET_RAW
        self.watch = RogueWatch(self.rogues, self.interfaces, _server_address(self.server),
                                _probe_mac(self.server), self.config.rogue_probe_interval,
                                self.reactor, self.clock)
        self.watch.start()
        ports = [self.config.listen_port]
        if self.config.mode == "proxy":
            ports.append(self.config.proxy_port)
        try:
            for number in ports:
                sock = open_socket("0.0.0.0", number)
                port = DhcpPort(sock, self.handler)
                self.ports.append(port)
                self.reactor.addReader(port)
        except OSError as e:
            self._close()
            raise CannotListenError("0.0.0.0", number, e)
        if self.metrics is not None:
            self.metrics.watch(self.metrics.leases, self.active_leases)
            self.metrics.watch(self.metrics.dhcp_rogue_servers,
                               lambda: self.rogues.active(self.clock()))
            self._unscrape = self.metrics.before_scrape(self._scrape)
        super().startService()
        self.log.info("{mode} on {ifs}, ports {ports}", mode=self.config.mode,
                      ifs=", ".join(self.config.interfaces) or "-",
                      ports=", ".join(str(p.port) for p in self.ports))
        self._log_split()

    def _log_split(self) -> None:
        """One line saying which share of each pool this server offers from (split scope)."""
        split = _split(self.config, self.pair)
        if split is None or self.machine is None:
            return
        shares = "; ".join(f"{s.network}: " + ", ".join(f"{lo}-{hi}" for lo, hi in s.share)
                           for s in self.machine.policy.subnets if s.share)
        self.log.info("split scope: this is {me} ({which} of pair.servers, {pct:g}% of each "
                      "pool), peer {peer}; offering from {shares}", me=str(self.pair.this_server),
                      which="first" if split[1] else "second",
                      pct=split[0] if split[1] else 100 - split[0], peer=str(self.pair.peer),
                      shares=shares or "-")

    def _open_prober(self) -> None:
        """The ICMP socket for dhcp.ping_check, opened while we may still hold CAP_NET_RAW."""
        if not self.config.ping_check or self.prober is not None:
            return
        try:
            self.prober = IcmpProber(self.reactor)
        except OSError as e:
            self.log.error("dhcp.ping_check: cannot open an ICMP socket ({e}); offering "
                           "without the conflict probe", e=e)
            return
        self.handler.prober = self.prober
        self.log.info("conflict probe on: ICMP echo before each new offer, {t} s timeout "
                      "({kind})", t=self.config.ping_timeout, kind=self.prober.kind)

    def reconfigure(self, config) -> bool:
        """SIGHUP: new policy and interfaces without dropping leases or sockets. False when the
        ports or the mode changed: the app then restarts the service (leases are on disk)."""
        ports_changed = (config.listen_port, config.mode, config.proxy_port) != \
            (self.config.listen_port, self.config.mode, self.config.proxy_port)
        if ports_changed:
            return False
        self.config = config
        if self.machine is not None:
            self.machine.policy = _policy(config, self.server, self.pair)
            self._log_split()
        if self.handler is not None:
            self._open_prober()
        self.rogues.known = _known_servers(config, self.pair)
        if self.watch is not None and config.rogue_probe_interval != self.watch.probe_interval:
            self.watch.set_probe_interval(config.rogue_probe_interval)
        if self.interfaces is not None and tuple(config.interfaces) != self.interfaces.names:
            self.interfaces.names = tuple(config.interfaces)
            self.interfaces.refresh()
        return True

    def _close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for port in self.ports:
            self.reactor.removeReader(port)
            port.connectionLost(None)
        self.ports = []
        if self.interfaces is not None:
            self.interfaces.stop()
        if self.prober is not None:
            self.prober.close()
            self.prober = None
        if self.watch is not None:
            self.watch.stop()
            self.watch = None
        if self._unscrape is not None:
            self._count_rogue_replies()       # what came since the last scrape
            self._unscrape()
            self._unscrape = None
        self.neighbours.close()

    @defer.inlineCallbacks
    def stopService(self):
        self._close()
        if self.metrics is not None:   # no longer this table's, nor these pools
            self.metrics.watch(self.metrics.leases, lambda: 0)
            self.metrics.watch(self.metrics.dhcp_rogue_servers, lambda: 0)
            self.metrics.dhcp_pool_addresses.clear()
            self.metrics.dhcp_pool_used.clear()
        if self.commit is not None:
            yield self.commit.drain()
            self.commit.stop()
            self.log.info("stopped: {rows} lease rows written in {batches} fsyncs",
                          rows=self.commit.rows, batches=self.commit.batches)
        if self.db is not None:
            self.db.close()
        super().stopService()

    # -- what /status, /metrics and the status page read ---------------------------------------
    def rogue_servers(self) -> list[dict]:
        """Other DHCP servers seen answering on a served interface, most recent first: each
        server_ip, server_mac, interface, first_seen, last_seen (epoch s), offers, acks, naks,
        last_offered (None: none yet), last_client, boot_file. At most 64 (dhcp.rogue)."""
        return [r.as_dict() for r in self.rogues.rogues()]

    def pools(self) -> list[dict]:
        """Use of each configured subnet's pools: subnet (CIDR), interface (None when none of
        ours is in it: a relayed subnet), size (pool addresses less devices' fixed ones),
        used (offered or bound), free (neither used nor quarantined by a DECLINE/conflict);
        with split scope these count this server's share, listed as share (["lo-hi", ...])."""
        if self.table is None or self.machine is None:
            return []
        now, out = self.clock(), []
        for subnet in self.machine.policy.subnets:
            pool = subnet.offer_pool          # split scope: this server's share
            held = [r for r in self.table.holders(pool, now) if r.ip not in self._reserved]
            size = pool_size(pool, subnet.network) - self._reserved_in(pool)
            used = sum(1 for r in held if r.state in (BOUND, OFFERED))
            row = {"subnet": str(subnet.network), "interface": self._interface_of(subnet),
                   "size": size, "used": used, "free": max(0, size - len(held))}
            if subnet.share is not None:
                row["share"] = [f"{lo}-{hi}" for lo, hi in subnet.share]
            out.append(row)
        return out

    def _scrape(self) -> None:
        """Before each /metrics scrape: the pool gauges (only configured subnets: a subnet
        removed by SIGHUP goes) and the rogue reply counter, kept as plain ints meanwhile."""
        pools = self.metrics.dhcp_pool_addresses, self.metrics.dhcp_pool_used
        for gauge in pools:
            gauge.clear()
        for pool in self.pools():
            pools[0].labels(subnet=pool["subnet"]).set(pool["size"])
            pools[1].labels(subnet=pool["subnet"]).set(pool["used"])
        self._count_rogue_replies()

    def _count_rogue_replies(self) -> None:
        for kind, total in self.rogues.replies.items():
            new = total - self._rogue_counted[kind]
            if new:
                self.metrics.dhcp_rogue_replies.labels(type=kind).inc(new)
                self._rogue_counted[kind] = total

    def status(self) -> dict:
        counts = dict(self.handler.counts) if self.handler else {}
        if self.table is not None:
            counts["active_leases"] = self.active_leases()
        if self.commit is not None:
            counts["commit_batches"] = self.commit.batches
            counts["committed_rows"] = self.commit.rows
        counts["rogue_probes"] = self.watch.probes_sent if self.watch is not None else 0
        counts["rogue_servers"] = self.rogue_servers()
        counts["pools"] = self.pools()
        return counts
