"""The DHCP service: loads the lease journal, opens :67 (and :4011 in proxy mode), follows
the served interfaces, and answers through dhcp.machine."""

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
from dhcp.leases import BOUND, OFFERED, LeaseTable
from dhcp.machine import Machine, Policy, Subnet
from dhcp.netif import Interfaces, Neighbours
from dhcp.protocol import DhcpHandler, DhcpPort, open_socket


def _policy(config, server) -> Policy:
    address = getattr(server, "address", None)
    return Policy(mode=config.mode, authoritative=config.authoritative,
                  unknown_mac_policy=config.unknown_mac_policy,
                  subnets=tuple(Subnet.from_config(s) for s in config.subnets),
                  server_address=IPv4Address(str(address)) if address else None,
                  unicast_offers=config.unicast_offers, decline_hold=config.decline_hold,
                  match_client_id=config.match_client_id,
                  ping_check=config.ping_check,
                  ping_timeout=config.ping_timeout)


class DHCPService(Service):
    name = "dhcp"
    log = Logger(namespace="bootserverd.dhcp")

    def __init__(self, config, server, model, resolver, leasedb_path: Path, reactor=None,
                 on_lease: Callable | None = None, clock: Callable[[], float] = time.time,
                 metrics: Metrics | None = None):
        from twisted.internet import reactor as default_reactor
        self.config = config
        self.server = server
        self.model = model
        self.resolver = resolver
        self.leasedb_path = Path(leasedb_path)
        self.reactor = reactor or default_reactor
        self.on_lease = on_lease
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
        if self.metrics is not None:
            self.metrics.watch(self.metrics.leases, self.active_leases)
        self._inventory_changed()
        self._unsubscribe = self.model.subscribe(self._inventory_changed)
        self.machine = Machine(_policy(self.config, self.server), self.table,
                               self.resolver.resolve, self._reservation,
                               lambda ip: ip in self._reserved, self._reserved_in)
        self.commit = GroupCommit(self.db, self.reactor, self._live_rows, lambda: len(self.table))
        self.commit.start()
        self.handler = DhcpHandler(self.machine, self.commit, self.interfaces, self.clock,
                                   self.on_lease, self.neighbours,
                                   debug=getattr(self.server, "log_level", "info") == "debug")
        self._open_prober()
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
        super().startService()
        self.log.info("{mode} on {ifs}, ports {ports}", mode=self.config.mode,
                      ifs=", ".join(self.config.interfaces) or "-",
                      ports=", ".join(str(p.port) for p in self.ports))

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
            self.machine.policy = _policy(config, self.server)
        if self.handler is not None:
            self._open_prober()
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
        self.neighbours.close()

    @defer.inlineCallbacks
    def stopService(self):
        self._close()
        if self.metrics is not None:
            self.metrics.watch(self.metrics.leases, lambda: 0)   # no longer this table's
        if self.commit is not None:
            yield self.commit.drain()
            self.commit.stop()
            self.log.info("stopped: {rows} lease rows written in {batches} fsyncs",
                          rows=self.commit.rows, batches=self.commit.batches)
        if self.db is not None:
            self.db.close()
        super().stopService()

    def status(self) -> dict:
        counts = dict(self.handler.counts) if self.handler else {}
        if self.table is not None:
            counts["active_leases"] = self.active_leases()
        if self.commit is not None:
            counts["commit_batches"] = self.commit.batches
            counts["committed_rows"] = self.commit.rows
        return counts
