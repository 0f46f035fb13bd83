"""DHCP policy (RFC 2131 server side, PXE proxyDHCP): message + arrival + now → Outcome.

Pure: no I/O, no clock. The caller supplies the arrival interface, the lease table, the boot
resolver and the reservation lookup; it must make `outcome.changes` durable before sending
`outcome.reply` (an ACK is only sent for a lease on stable storage).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network
from typing import Any, Callable, Protocol

from dhcp import options as O
from dhcp.codec import BOOTREPLY, BOOTREQUEST, BROADCAST_FLAG, ZERO, Message, encode
from dhcp.leases import BOUND, DECLINED, Lease, LeaseTable
from dhcp.split import in_ranges

BROADCAST = IPv4Address("255.255.255.255")
CLIENT_PORT, SERVER_PORT, PXE_PORT = 68, 67, 4011
OFFER_HOLD = 60.0        # an offered address is held this long for the client
MAX_PROBES = 256         # conflict probes in flight; beyond that DISCOVERs wait for a retry
PROBE_ATTEMPTS = 3       # addresses probed for one DISCOVER before giving up on it
DECLINE_HOLD = 600.0     # a declined address is quarantined this long
# UEFI HTTP Boot firmware sends option 60 "HTTPClient:Arch:xxxxx:UNDI:yyyzzz" (UEFI spec, HTTP Boot).
HTTP_CLIENT = b"HTTPClient"
# Options every reply carries when they apply; the rest follow the client's request list.
ALWAYS = (O.SUBNET_MASK, O.ROUTER, O.DNS, O.DOMAIN, O.BROADCAST, O.HOSTNAME, O.BOOTFILE,
          O.TFTP_SERVER)


class PlanDevice(Protocol):
    """The inventory device behind a boot plan, as far as the machine looks at it."""
    @property
    def enabled(self) -> bool: ...
    @property
    def type(self) -> str | None: ...


class BootPlan(Protocol):
    """What the machine needs from a boot plan: who the client is, and what to put in the
    reply. bootserverd.boot.resolver.BootPlan is one (dhcp does not import it: the boot
    layer sits above the protocol packages)."""
    @property
    def known(self) -> bool: ...           # the MAC is in the inventory
    @property
    def device(self) -> PlanDevice | None: ...
    @property
    def hostname(self) -> str | None: ...  # option 12, and the lease row's name
    @property
    def reserved_ip(self) -> str | None: ...   # the device's fixed address
    @property
    def bootfile(self) -> str: ...         # option 67 / file ("" = none)
    @property
    def next_server(self) -> str: ...      # siaddr / option 66 ("" = this server)
    @property
    def error(self) -> str | None: ...     # why the boot will show an error menu


# resolve(mac, client arch (option 93), iPXE?, client IP or None) → the plan, None for none
Resolve = Callable[[str, int | None, bool, str | None], BootPlan | None]


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    address: IPv4Address
    network: IPv4Network


@dataclass(frozen=True)
class Arrival:
    interface: Interface | None   # where it came in (IP_PKTINFO); None if unknown
    src: IPv4Address
    src_port: int
    port: int = SERVER_PORT        # our port it arrived on: 67, or 4011 (PXE boot server)
    addresses: tuple[Interface, ...] = ()  # all addresses of the arrival interface


@dataclass(frozen=True)
class Reply:
    message: Message
    payload: bytes
    dest: IPv4Address
    port: int
    interface: Interface | None   # send out of this interface (matters for broadcast)
    unicast_to_mac: bool = False  # dest is yiaddr of a client that has no ARP entry yet


@dataclass(frozen=True)
class Outcome:
    reply: Reply | None = None
    changes: tuple[Lease, ...] = ()    # lease rows to make durable before sending the reply
    event: str | None = None           # one info-level log line (ACK/NAK/DECLINE/RELEASE)
    debug: str | Callable[[], str] | None = None  # per-packet detail (callable: built lazily)
    throttle: str | None = None        # events with the same key: at most one line a minute
    probe: "Probe | None" = None       # send an ICMP echo; report with Machine.probe_result
    renewal: bool = False              # an ACK to a client extending a lease it holds (no new boot)


@dataclass(frozen=True)
class Probe:
    """Action: is `ip` in use? Echo it, wait `timeout` s, then call probe_result(ip, ...)."""
    ip: IPv4Address
    timeout: float


@dataclass(frozen=True)
class _Pending:
    """A DISCOVER waiting for the conflict probe of the address it is to be offered."""
    msg: Message
    arrival: Arrival
    subnet: "Subnet"
    server_id: IPv4Address
    where: "_Where"
    attempt: int


@dataclass(frozen=True)
class Subnet:
    """A configured subnet (from config.SubnetConfig), normalised for the policy."""
    network: IPv4Network
    pool: tuple[tuple[IPv4Address, IPv4Address], ...]
    router: IPv4Address | None = None
    dns: tuple[IPv4Address, ...] = ()
    domain: str | None = None
    ntp: tuple[IPv4Address, ...] = ()
    lease_time: int = 3600
    reserve_for_known: int = 0     # pool addresses unknown clients may not take
    # split scope (dhcp/split.py): the part of `pool` this server offers from; None: all of it
    share: tuple[tuple[IPv4Address, IPv4Address], ...] | None = None

    @property
    def offer_pool(self) -> tuple[tuple[IPv4Address, IPv4Address], ...]:
        """Where new offers come from: this server's share of the pool."""
        return self.pool if self.share is None else self.share

    @property
    def static_options(self) -> dict[int, bytes]:
        """The subnet's own options, encoded once (replies are built per packet)."""
        cached = self.__dict__.get("_static")
        if cached is None:
            cached = {O.SUBNET_MASK: self.network.netmask.packed,
                      O.BROADCAST: self.network.broadcast_address.packed}
            if self.router is not None:
                cached[O.ROUTER] = self.router.packed
            if self.dns:
                cached[O.DNS] = O.ips(self.dns)
            if self.domain:
                cached[O.DOMAIN] = O.text(self.domain)
            if self.ntp:
                cached[O.NTP] = O.ips(self.ntp)
            object.__setattr__(self, "_static", cached)
        return cached

    @classmethod
    def from_config(cls, c: Any, split: tuple[float, bool] | None = None) -> "Subnet":
        """`split`: (dhcp.split, whether this is the first of pair.servers), or None."""
        from dhcp.split import share as split_share
        pool = tuple((IPv4Address(a), IPv4Address(b)) for a, b in c.pool)
        mine = split_share(pool, *split) if split is not None else None
        return cls(IPv4Network(c.network), pool, IPv4Address(c.router) if c.router else None,
                   tuple(IPv4Address(a) for a in c.dns), c.domain,
                   tuple(IPv4Address(a) for a in c.ntp), int(c.lease_time),
                   reserve_count(getattr(c, "reserve_for_known", 0), mine or pool), mine)


def reserve_count(value: int | str, pool) -> int:
    """`reserve_for_known` as a number of addresses: a count, or "N%" of the pool rounded up."""
    if isinstance(value, str):
        size = sum(int(hi) - int(lo) + 1 for lo, hi in pool)
        return min(size, math.ceil(float(value.rstrip("%")) * size / 100))
    return int(value)


@dataclass
class Policy:
    mode: str = "server"               # server | proxy
    authoritative: bool = True
    unknown_mac_policy: str = "allow"  # MACs not in the inventory: allow | deny | pxe-only
    subnets: tuple[Subnet, ...] = ()
    server_address: IPv4Address | None = None  # fallback server id / next-server
    unicast_offers: bool = False       # unicast to yiaddr (needs a neighbour entry) vs broadcast
    decline_hold: float = DECLINE_HOLD
    # False: a lease follows the MAC. A PXE boot is three DHCP clients in a row (firmware,
    # iPXE, the initramfs) and they send different client identifiers (61) or none; keyed on
    # 61 each would take its own address (as under OVMF). True: RFC 2131's client identifier.
    match_client_id: bool = False
    # ICMP echo before offering a pool address the client did not hold (ISC ping-check):
    # an answer marks the address in conflict for decline_hold and another is tried.
    ping_check: bool = False
    ping_timeout: float = 1.0
    # The chaddr of our own rogue-server probe (dhcp/rogue.py): its DISCOVER loops back to our
    # port 67, and an answer would be a pool address held for a client that never comes.
    probe_mac: bytes | None = None
    # Split scope: this server's own address (pair.this_server). It is the server identifier
    # wherever the arrival interface has it, never a VRRP address that may move to the peer.
    own_address: IPv4Address | None = None


@dataclass(frozen=True)
class ClientInfo:
    mac: str
    key: bytes
    arch: int | None
    ipxe: bool
    pxe: bool           # a network-boot client (PXE, iPXE or UEFI HTTP Boot)
    http: bool = False  # UEFI HTTP Boot firmware: wants a URL and "HTTPClient" back, no TFTP


def client_info(msg: Message, match_client_id: bool = True) -> ClientInfo:
    arches = O.to_u16s(msg.get(O.CLIENT_ARCH))
    vendor = msg.get(O.VENDOR_CLASS) or b""
    ipxe = b"iPXE" in O.user_classes(msg.get(O.USER_CLASS)) or msg.get(O.IPXE_ENCAP) is not None
    key = msg.client_key if match_client_id else bytes((msg.htype,)) + msg.chaddr
    http = vendor.startswith(HTTP_CLIENT)
    return ClientInfo(msg.mac, key, arches[0] if arches else None, ipxe,
                      vendor.startswith(b"PXEClient") or http or bool(arches), http)


def _is_url(bootfile: str) -> bool:
    return bootfile.startswith(("http://", "https://"))


class Machine:
    """One per service. `resolve(mac, arch, ipxe, client_ip)` is BootResolver.resolve;
    `reservation(mac)` returns the device's fixed IP or None; `reserved(ip)` tells whether an
    address is some device's fixed IP; `reserved_in(pool)` counts those inside a pool."""

    def __init__(self, policy: Policy, leases: LeaseTable,
                 resolve: Resolve,
                 reservation: Callable[[str], IPv4Address | None] = lambda mac: None,
                 reserved: Callable[[IPv4Address], bool] = lambda ip: False,
                 reserved_in: Callable[[tuple], int] = lambda pool: 0):
        self.policy = policy
        self.leases = leases
        self.resolve = resolve
        self.reservation = reservation
        self.reserved = reserved
        self.reserved_in = reserved_in      # how many devices' fixed IPs lie in a pool
        self.probing: dict[IPv4Address, _Pending] = {}

    # -- entry point ---------------------------------------------------------------------
    def handle(self, msg: Message, arrival: Arrival, now: float) -> Outcome:
        if msg.op != BOOTREQUEST:
            return Outcome(debug="ignored BOOTREPLY")
        if msg.chaddr == self.policy.probe_mac:
            return Outcome(debug="ignored our own rogue-server probe")
        kind = msg.msg_type
        if kind is None:
            return Outcome(debug=f"ignored BOOTP request from {msg.mac} (no DHCP message type)")
        if self.policy.mode == "proxy":
            return self._proxy(msg, kind, arrival)
        if arrival.port == PXE_PORT:
            return self._pxe_boot_server(msg, kind, arrival)
        subnet, server_id, where = self._locate(msg, arrival)
        if subnet is None:
            return Outcome(debug=f"{O.TYPE_NAMES.get(kind, kind)} from {msg.mac} {where}: "
                                 f"no configured subnet")
        handler = {O.DISCOVER: self._discover, O.REQUEST: self._request,
                   O.DECLINE: self._decline, O.RELEASE: self._release,
                   O.INFORM: self._inform}.get(kind)
        if handler is None:
            return Outcome(debug=f"ignored message type {kind} from {msg.mac}")
        return handler(msg, arrival, now, subnet, server_id, where)

    # -- where the client is -------------------------------------------------------------
    def _subnet_of(self, ip: IPv4Address) -> Subnet | None:
        for subnet in self.policy.subnets:
            if ip in subnet.network:
                return subnet
        return None

    def _locate(self, msg: Message, arrival: Arrival):
        iface = arrival.interface
        ifname = iface.name if iface else "?"
        if msg.giaddr != ZERO:
            where = _Where("via relay", msg.giaddr)
            return self._subnet_of(msg.giaddr), self._server_id(arrival, None), where
        where = _Where("on", ifname)
        candidates = arrival.addresses or ((iface,) if iface else ())
        if msg.ciaddr != ZERO:
            subnet = self._subnet_of(msg.ciaddr)
            if subnet is not None:
                return subnet, self._server_id(arrival, subnet), where
        for addr in candidates:
            subnet = self._subnet_of(addr.address)
            if subnet is not None:
                return subnet, self._server_id(arrival, subnet), where
        return None, None, where

    def _server_id(self, arrival: Arrival, subnet: Subnet | None) -> IPv4Address:
        candidates = arrival.addresses or ((arrival.interface,) if arrival.interface else ())
        own = self.policy.own_address
        if own is not None and any(addr.address == own for addr in candidates):
            return own
        for addr in candidates:
            if subnet is None or addr.address in subnet.network:
                return addr.address
        if candidates:
            return candidates[0].address
        return self.policy.server_address or ZERO

    # -- the boot part ---------------------------------------------------------------------
    def _plan(self, info: ClientInfo, client_ip: IPv4Address | None) -> BootPlan | None:
        return self.resolve(info.mac, info.arch, info.ipxe,
                            str(client_ip) if client_ip is not None else None)

    def _admit(self, info: ClientInfo, plan: BootPlan | None) -> bool:
        if plan is not None and plan.known:
            return plan.device is None or plan.device.enabled
        rule = self.policy.unknown_mac_policy
        return rule == "allow" or (rule == "pxe-only" and info.pxe)

    def _fixed(self, info: ClientInfo, plan: BootPlan | None, subnet: Subnet) -> IPv4Address | None:
        raw = (plan.reserved_ip if plan is not None else None) or self.reservation(info.mac)
        if not raw:
            return None
        ip = IPv4Address(raw)
        return ip if ip in subnet.network else None

    def _kept_for_known(self, subnet: Subnet, info: ClientInfo, plan: BootPlan | None,
                        ip: IPv4Address, now: float) -> bool:
        """Whether giving `ip` to this client would dig into the pool's reserve for known
        devices: only unknown clients taking an address they do not hold already."""
        if not subnet.reserve_for_known or (plan is not None and plan.known):
            return False
        row = self.leases.at(ip)
        if row is not None and row.key == info.key and row.active(now):
            return False            # its own offer or lease: renewing takes nothing new
        pool = subnet.offer_pool
        free = self.leases.free_count(pool, now) - self.reserved_in(pool)
        return free <= subnet.reserve_for_known

    def _taken_for(self, fixed: IPv4Address | None) -> Callable[[IPv4Address], bool]:
        return lambda ip: ip != fixed and self.reserved(ip)

    # -- message handlers ------------------------------------------------------------------
    def _discover(self, msg, arrival, now, subnet, server_id, where, attempt=1) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        plan = self._plan(info, None)
        if not self._admit(info, plan):
            return Outcome(debug=f"DISCOVER from {info.mac} {where}: unknown client, not served")
        fixed = self._fixed(info, plan, subnet)
        if fixed is not None:
            row = self.leases.at(fixed)
            if row is not None and row.key != info.key and row.state == BOUND and row.active(now):
                return Outcome(event=f"reserved address {fixed} of {info.mac} is leased to "
                                     f"{row.mac}; not offered")
            ip = fixed
        else:
            requested = O.to_ip(msg.get(O.REQUESTED_IP))
            ip = self.leases.allocate(subnet.offer_pool, info.key, requested, now,
                                      self._taken_for(None), subnet.network)
            if ip is None:
                return Outcome(event=f"no free address in {subnet.network} for {info.mac} {where}",
                               throttle=f"pool {subnet.network}")   # a flood: not a line each
            if self._kept_for_known(subnet, info, plan, ip, now):
                return Outcome(event=f"pool of {subnet.network}: the last "
                                     f"{subnet.reserve_for_known} free addresses are kept for "
                                     f"known devices; unknown {info.mac} {where} not offered",
                               throttle=f"reserve {subnet.network}")
            if ip in self.probing:      # a retransmission: the probe's result will answer
                return Outcome(debug=f"DISCOVER from {info.mac}: {ip} is being probed")
            row = self.leases.at(ip)
            if self.policy.ping_check and (row is None or row.key != info.key):
                if len(self.probing) >= MAX_PROBES:
                    return Outcome(event=f"{MAX_PROBES} conflict probes in flight; DISCOVER "
                                         f"from {info.mac} {where} left for its retry",
                                   throttle="probes")
                hostname = plan.hostname if plan is not None else None
                self.leases.offer(ip, info.key, info.mac, hostname, now + OFFER_HOLD, now)  # held
                self.probing[ip] = _Pending(msg, arrival, subnet, server_id, where, attempt)
                return Outcome(probe=Probe(ip, self.policy.ping_timeout),
                               debug=lambda: f"probing {ip} before offering it to {info.mac}")
        hostname = plan.hostname if plan is not None else None
        self.leases.offer(ip, info.key, info.mac, hostname, now + OFFER_HOLD, now)
        reply = self._reply(msg, O.OFFER, arrival, subnet, server_id, info, plan, ip)
        return Outcome(reply=reply, debug=lambda: f"OFFER {ip} to {info.mac} {where}")

    def probe_result(self, ip: IPv4Address, answered: bool, now: float) -> Outcome:
        """The conflict probe of `ip` is over: offer it, or mark it in conflict and try
        another address for the same DISCOVER."""
        pending = self.probing.pop(ip, None)
        if pending is None:
            return Outcome(debug=f"probe result for {ip}: nothing waits for it")
        msg, arrival, subnet, server_id, where = (pending.msg, pending.arrival, pending.subnet,
                                                  pending.server_id, pending.where)
        info = client_info(msg, self.policy.match_client_id)
        row = self.leases.at(ip)
        held = row is not None and row.key == info.key and row.active(now)
        if not answered and held:
            plan = self._plan(info, None)
            reply = self._reply(msg, O.OFFER, arrival, subnet, server_id, info, plan, ip)
            return Outcome(reply=reply, debug=lambda: f"OFFER {ip} to {info.mac} {where} (probed)")
        if not answered:   # the hold went meanwhile (a DECLINE, another server chosen): start over
            return self._discover(msg, arrival, now, subnet, server_id, where, pending.attempt + 1) \
                if pending.attempt < PROBE_ATTEMPTS else Outcome(debug=f"probe of {ip}: gave up")
        self.leases.forget_offer(info.key)
        conflict = self.leases.decline(ip, now + self.policy.decline_hold)
        event = (f"conflict: {ip} answered a ping before being offered to {info.mac} {where}; "
                 f"kept out of the pool for {int(self.policy.decline_hold)} s")
        if pending.attempt >= PROBE_ATTEMPTS:
            return Outcome(changes=(conflict,), event=event + f"; {info.mac} waits for its retry")
        again = self._discover(msg, arrival, now, subnet, server_id, where, pending.attempt + 1)
        return replace(again, changes=(conflict,) + again.changes,
                       event=event + (f"; {again.event}" if again.event else ""), throttle=None)

    def _request(self, msg, arrival, now, subnet, server_id, where) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        sid = O.to_ip(msg.get(O.SERVER_ID))
        requested = O.to_ip(msg.get(O.REQUESTED_IP))
        if sid is not None:                      # SELECTING
            if sid != server_id:
                self.leases.forget_offer(info.key)
                return Outcome(debug=f"REQUEST from {info.mac} chose server {sid}")
            ip = requested or (msg.ciaddr if msg.ciaddr != ZERO else None)
            state = "SELECTING"
            if ip is None:          # RFC 2131 4.3.2: SELECTING MUST name the address
                return self._nak(msg, arrival, server_id, info, where, None,
                                 "SELECTING: no address requested")
        elif requested is not None and msg.ciaddr == ZERO:
            ip, state = requested, "INIT-REBOOT"
        elif msg.ciaddr != ZERO:
            ip = msg.ciaddr
            state = "RENEWING" if arrival.src == msg.ciaddr and msg.giaddr == ZERO \
                and arrival.src != BROADCAST else "REBINDING"
        else:
            return self._nak(msg, arrival, server_id, info, where, None, "no address requested")
        plan = self._plan(info, ip)
        if not self._admit(info, plan):
            return Outcome(debug=f"REQUEST from {info.mac} {where}: unknown client, not served")
        if ip not in subnet.network:
            return self._nak(msg, arrival, server_id, info, where, ip, f"{state}: wrong subnet")
        fixed = self._fixed(info, plan, subnet)
        if fixed is not None and ip != fixed:
            return self._nak(msg, arrival, server_id, info, where, ip,
                             f"{state}: device is reserved {fixed}")
        if fixed is None:
            row = self.leases.at(ip)
            mine = row is not None and row.key == info.key and row.state != DECLINED
            in_pool = any(lo <= ip <= hi for lo, hi in subnet.pool)
            peers = subnet.share is not None and in_pool and not in_ranges(ip, subnet.share)
            if peers and state == "INIT-REBOOT" and (row is None or not row.active(now)):
                # The peer gave it, and knows whether it still may: the peer may have given it
                # to another client since (the client goes on to DISCOVER when the peer is
                # dead). A RENEWING/REBINDING client holds an unexpired lease, which the peer
                # never gives away: ACKed below when no other client holds it here.
                return Outcome(debug=f"INIT-REBOOT from {info.mac} {where} for {ip} in the "
                                     f"peer's share: left to the peer")
            if not mine:
                if state in ("SELECTING",):
                    return self._nak(msg, arrival, server_id, info, where, ip,
                                     f"{state}: no offer for {ip}")
                if not (in_pool and self.leases.free_for(ip, info.key, now)
                        and not self.reserved(ip)):
                    return self._nak(msg, arrival, server_id, info, where, ip,
                                     f"{state}: {ip} is not available")
            elif not in_pool:
                return self._nak(msg, arrival, server_id, info, where, ip,
                                 f"{state}: {ip} left the pool")
            if self._kept_for_known(subnet, info, plan, ip, now):
                return self._nak(msg, arrival, server_id, info, where, ip,
                                 f"{state}: the pool's last free addresses are kept for "
                                 f"known devices")
        else:
            row = self.leases.at(ip)
            if row is not None and row.key != info.key and row.state == BOUND and row.active(now):
                return self._nak(msg, arrival, server_id, info, where, ip,
                                 f"{state}: reserved {ip} is leased to {row.mac}")
        hostname = plan.hostname if plan is not None else None
        lease, moved = self.leases.bind(ip, info.key, info.mac, hostname, now + subnet.lease_time)
        changes = (moved, lease) if moved is not None else (lease,)
        reply = self._reply(msg, O.ACK, arrival, subnet, server_id, info, plan, ip)
        device = plan.device if plan is not None else None
        dtype = (device.type if device is not None else None) or "unknown"
        error = plan.error if plan is not None else None
        taken_over = fixed is None and subnet.share is not None \
            and not in_ranges(ip, subnet.share) and not (row is not None and row.key == info.key)
        event = (f"ACK {ip} to {info.mac} ({hostname or '-'}, {dtype}) {where} [{state}]"
                 + (" from the peer's share (its server did not answer)" if taken_over else "")
                 + (f" boot error: {error}" if error else ""))
        return Outcome(reply=reply, changes=changes, event=event, renewal=state in ("RENEWING", "REBINDING"))

    def _nak(self, msg, arrival, server_id, info, where, ip, why) -> Outcome:
        if not self.policy.authoritative:
            return Outcome(debug=f"not NAKing {info.mac} {where} ({why}): not authoritative")
        options = [(O.MESSAGE_TYPE, O.u8(O.NAK)), (O.SERVER_ID, O.ip(server_id)),
                   (O.MESSAGE, O.text(why))]
        if msg.get(O.CLIENT_ID) is not None:
            options.append((O.CLIENT_ID, msg.get(O.CLIENT_ID)))
        if msg.get(O.RELAY_AGENT) is not None:
            options.append((O.RELAY_AGENT, msg.get(O.RELAY_AGENT)))
        flags = msg.flags
        if msg.giaddr != ZERO:
            flags |= BROADCAST_FLAG  # RFC 2131 4.3.2: relay must broadcast the NAK
            dest, port = msg.giaddr, SERVER_PORT
        else:
            dest, port = BROADCAST, CLIENT_PORT
        reply = Message(op=BOOTREPLY, xid=msg.xid, chaddr=msg.chaddr, htype=msg.htype,
                        flags=flags, giaddr=msg.giaddr, options=tuple(options))
        return Outcome(reply=Reply(reply, encode(reply), dest, port, arrival.interface),
                       event=f"NAK {ip or '-'} to {info.mac} {where}: {why}")

    def _decline(self, msg, arrival, now, subnet, server_id, where) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        sid = O.to_ip(msg.get(O.SERVER_ID))
        ip = O.to_ip(msg.get(O.REQUESTED_IP))
        if ip is None or (sid is not None and sid != server_id):
            return Outcome(debug=f"DECLINE from {info.mac} not for us")
        row = self.leases.at(ip)
        if row is None or row.key != info.key:
            return Outcome(debug=f"DECLINE of {ip} from {info.mac}, which does not hold it")
        lease = self.leases.decline(ip, now + self.policy.decline_hold)
        return Outcome(changes=(lease,), event=f"DECLINE {ip} from {info.mac} {where}: "
                       f"address in use, quarantined {int(self.policy.decline_hold)} s")

    def _release(self, msg, arrival, now, subnet, server_id, where) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        sid = O.to_ip(msg.get(O.SERVER_ID))
        if sid is not None and sid != server_id:
            return Outcome(debug=f"RELEASE from {info.mac} for server {sid}")
        lease = self.leases.release(msg.ciaddr, info.key, now)
        if lease is None:
            return Outcome(debug=f"RELEASE of {msg.ciaddr} from {info.mac}: no such lease")
        return Outcome(changes=(lease,), event=f"RELEASE {msg.ciaddr} from {info.mac} "
                       f"({lease.hostname or '-'}) {where}")

    def _inform(self, msg, arrival, now, subnet, server_id, where) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        plan = self._plan(info, msg.ciaddr if msg.ciaddr != ZERO else None)
        if not self._admit(info, plan):
            return Outcome(debug=f"INFORM from {info.mac}: unknown client, not served")
        reply = self._reply(msg, O.ACK, arrival, subnet, server_id, info, plan, None)
        return Outcome(reply=reply, debug=f"ACK (INFORM) to {info.mac} at {msg.ciaddr} {where}")

    # -- proxyDHCP (PXE spec 2.1 §2.2) -------------------------------------------------------
    def _proxy(self, msg, kind, arrival) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        if not info.pxe:
            return Outcome(debug=f"proxy: {info.mac} is not a PXE client")
        if arrival.port == PXE_PORT:
            if kind not in (O.REQUEST, O.INFORM):
                return Outcome(debug=f"proxy: ignored type {kind} on port {PXE_PORT}")
        elif kind != O.DISCOVER:
            # REQUESTs on 67 go to the address server; we answered the DISCOVER already.
            return Outcome(debug=f"proxy: ignored {O.TYPE_NAMES.get(kind, kind)} from {info.mac}")
        return self._pxe_boot_server(msg, kind, arrival)

    def _pxe_boot_server(self, msg, kind, arrival) -> Outcome:
        info = client_info(msg, self.policy.match_client_id)
        client_ip = msg.ciaddr if msg.ciaddr != ZERO else None
        plan = self._plan(info, client_ip)
        if not self._admit(info, plan) or not info.pxe:
            return Outcome(debug=f"PXE: {info.mac} not served")
        server_id = self._server_id(arrival, None)
        at_4011 = arrival.port == PXE_PORT
        next_server = _address(plan.next_server) if plan and plan.next_server else server_id
        bootfile = (plan.bootfile if plan else "") or ""
        options = [(O.MESSAGE_TYPE, O.u8(O.ACK if at_4011 else O.OFFER)),
                   (O.SERVER_ID, O.ip(server_id))]
        if info.http:
            # EDK2 takes a proxy offer (yiaddr 0) with "HTTPClient" and an http:// URL as its
            # boot URI beside the address server's offer (HttpOfferTypeProxyIpUri); an
            # "HTTPClient" offer without a URL is dropped. No PXE options: they are for PXE.
            if not _is_url(bootfile):
                return Outcome(debug=f"proxy: HTTP boot client {info.mac} has no boot URL "
                                     f"({plan.error if plan and plan.error else 'none'})")
            options += [(O.VENDOR_CLASS, HTTP_CLIENT), (O.BOOTFILE, O.text(bootfile))]
        else:
            options += [(O.VENDOR_CLASS, b"PXEClient"),
                        # PXE discovery control 8: boot the file in this reply, no menu/discovery.
                        (O.VENDOR_SPECIFIC, O.encode_suboptions([(6, b"\x08")]) + b"\xff")]
            if bootfile:
                options.append((O.BOOTFILE, O.text(bootfile)))
            options.append((O.TFTP_SERVER, O.text(str(next_server))))
        for code in (O.CLIENT_UUID, O.RELAY_AGENT):
            if msg.get(code) is not None:
                options.append((code, msg.get(code)))
        reply = Message(op=BOOTREPLY, xid=msg.xid, chaddr=msg.chaddr, htype=msg.htype,
                        flags=msg.flags, ciaddr=msg.ciaddr, siaddr=next_server,
                        giaddr=msg.giaddr, file=_field(bootfile, 128), options=tuple(options))
        payload = encode(reply, _max_size(msg))
        if at_4011:
            dest, port = arrival.src, arrival.src_port
        elif msg.giaddr != ZERO:
            dest, port = msg.giaddr, SERVER_PORT
        else:
            dest, port = BROADCAST, CLIENT_PORT
        return Outcome(reply=Reply(reply, payload, dest, port, arrival.interface),
                       debug=f"{'HTTP boot' if info.http else 'PXE'} {'ACK' if at_4011 else 'proxy OFFER'} "
                             f"{bootfile!r} to {info.mac}")

    # -- building replies ----------------------------------------------------------------
    def _reply(self, msg, kind, arrival, subnet, server_id, info, plan, ip) -> Reply:
        available = dict(subnet.static_options)
        hostname = plan.hostname if plan is not None else None
        if hostname:
            available[O.HOSTNAME] = O.text(hostname)
        bootfile = (plan.bootfile if plan is not None else "") or ""
        next_server = _address(plan.next_server) if plan is not None and plan.next_server \
            else server_id
        if bootfile:
            available[O.BOOTFILE] = O.text(bootfile)
            available[O.TFTP_SERVER] = _address_text(next_server)
        http = info.http and _is_url(bootfile)
        if http:
            # UEFI HTTP Boot (EDK2 HttpBootDxe): only an offer whose option 60 starts with
            # "HTTPClient" is an HTTP offer whose URL (67 / file) is booted; without it the
            # firmware waits for a proxy offer that never comes and gives up after ~60 s.
            # The URL names the server: no option 66.
            available[O.VENDOR_CLASS] = HTTP_CLIENT
            del available[O.TFTP_SERVER]
        # No option 60 "PXEClient" here: with it a PXE ROM may go on to boot-server
        # discovery on :4011, which only proxy mode serves. file/66/67 suffice.
        if info.ipxe:
            # 175.176 = 1 (no-pxedhcp): iPXE need not wait for proxyDHCP offers.
            available[O.IPXE_ENCAP] = O.encode_suboptions([(176, b"\x01")])
        head = [(O.MESSAGE_TYPE, bytes((kind,))), (O.SERVER_ID, server_id.packed)]
        if ip is not None:
            t = subnet.lease_time
            head += [(O.LEASE_TIME, O.u32(t)), (O.RENEWAL_T1, O.u32(t // 2)),
                     (O.REBINDING_T2, O.u32(t * 7 // 8))]
        if msg.get(O.CLIENT_ID) is not None:
            head.append((O.CLIENT_ID, msg.get(O.CLIENT_ID)))
        if msg.get(O.RELAY_AGENT) is not None:
            head.append((O.RELAY_AGENT, msg.get(O.RELAY_AGENT)))  # RFC 3046: echo unchanged
        requested = msg.get(O.PARAM_REQUEST) or b""
        order = [c for c in dict.fromkeys(requested) if c in available]
        order += [c for c in ALWAYS if c in available and c not in order]
        if info.ipxe and O.IPXE_ENCAP not in order:
            order.append(O.IPXE_ENCAP)
        if http and O.VENDOR_CLASS not in order:
            order.append(O.VENDOR_CLASS)
        options = tuple(head) + tuple((c, available[c]) for c in order)
        reply = Message(op=BOOTREPLY, xid=msg.xid, chaddr=msg.chaddr, htype=msg.htype,
                        flags=msg.flags, ciaddr=msg.ciaddr if kind == O.ACK else ZERO,
                        yiaddr=ip or ZERO, siaddr=next_server, giaddr=msg.giaddr,
                        file=_field(bootfile, 128), options=options)
        payload = encode(reply, _max_size(msg))
        unicast = False
        if msg.giaddr != ZERO:
            dest, port = msg.giaddr, SERVER_PORT
        elif msg.ciaddr != ZERO:
            dest, port = msg.ciaddr, CLIENT_PORT
        elif msg.broadcast or not self.policy.unicast_offers or ip is None \
                or msg.htype != 1 or len(msg.chaddr) != 6:   # a neighbour entry needs a MAC
            dest, port = BROADCAST, CLIENT_PORT
        else:
            dest, port, unicast = ip, CLIENT_PORT, True
        return Reply(reply, payload, dest, port, arrival.interface, unicast)


class _Where:
    """'on eth1' / 'via relay 10.9.0.1', formatted only when a log line needs it."""
    __slots__ = ("how", "what")

    def __init__(self, how, what):
        self.how, self.what = how, what

    def __str__(self) -> str:
        return f"{self.how} {self.what}"

    __format__ = lambda self, spec: format(str(self), spec)


@lru_cache(maxsize=64)
def _address(text: str) -> IPv4Address:
    return IPv4Address(text)


@lru_cache(maxsize=64)
def _address_text(addr: IPv4Address) -> bytes:
    return str(addr).encode()


def _field(value: str, size: int) -> bytes:
    raw = value.encode("utf-8", "replace")
    return raw if len(raw) < size else b""   # too long for the field: option 67 carries it


def _max_size(msg: Message) -> int:
    """RFC 2132 §9.10: option 57 counts the IP and UDP headers; 576 is the floor."""
    size = O.to_u16(msg.get(O.MAX_SIZE)) or 576
    return max(size, 576) - 28
