"""The boot report: what each device did on its last boot, from every service, in one place.

Services report through their hooks (DHCP ACK, a file fetched over TFTP or HTTP, an NBD
session ended) and the NBD service is asked for its live sessions (an attached root never
"ends" while the machine runs). Clients are known by MAC from their DHCP lease; TFTP, HTTP
and NBD only see an address, mapped back through the last ACK for it.

A new boot starts with a DHCP ACK once the previous boot reached its NBD root or went quiet
for BOOT_GAP seconds; the firmware, iPXE and the initramfs each ACK within one boot.
Pure bookkeeping: no I/O, time comes from ``clock`` (the reactor's seconds()).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from bootserverd.ops.transfers import Transfer

BOOT_GAP = 300.0          # quiet seconds after which an ACK is a new boot
STALL = 60.0              # an unfinished boot quiet this long is reported as stopped
MAX_DEVICES = 20000       # bounded memory: the least recently active device is forgotten
MAX_EVENTS = 100          # per boot (a menu loop retrying must not grow without bound)


@dataclass(frozen=True)
class Event:
    at: float                 # when it began (clock seconds)
    kind: str                 # dhcp | tftp | http | nbd
    what: str
    ok: bool = True
    seconds: float = 0.0      # how long it took (transfers, sessions)


@dataclass
class Boot:
    mac: str
    ip: str | None
    hostname: str | None
    started: float
    events: list[Event] = field(default_factory=list)
    root_attached: bool = False
    last: float = 0.0


@dataclass(frozen=True)
class LiveSession:
    client: str
    export: str | None
    started: float
    bytes_sent: int


class BootReport:
    def __init__(self, clock: Callable[[], float],
                 live_sessions: Callable[[], Iterable[LiveSession]] | None = None):
        self.clock = clock
        self.live_sessions = live_sessions
        self.boots: OrderedDict[str, Boot] = OrderedDict()
        self.mac_by_ip: dict[str, str] = {}

    # -- hooks --------------------------------------------------------------------------------
    def dhcp_lease(self, lease) -> None:
        """DHCPService(on_lease=): a dhcp.leases.Lease row made durable."""
        if getattr(lease, "state", None) != "bound":
            return
        now = self.clock()
        mac, ip = lease.mac, str(lease.ip)
        self.mac_by_ip[ip] = mac
        boot = self.boots.get(mac)
        if boot is None or boot.root_attached or now - boot.last > BOOT_GAP:
            boot = Boot(mac, ip, lease.hostname, started=now)
        boot.ip, boot.hostname = ip, lease.hostname or boot.hostname
        self._add(boot, Event(now, "dhcp", f"ACK {ip}" + (f" ({lease.hostname})" if lease.hostname else "")))

    def transfer(self, transfer: Transfer) -> None:
        """Every service's ``on_transfer=``: a file sent over TFTP or HTTP, an NBD session ended
        (bootserverd.ops.transfers.Transfer). An NBD session that reached its export means the
        root was attached."""
        self._by_ip(transfer.client, Event(self.clock() - transfer.seconds, transfer.service, transfer.summary,
                                           transfer.ok, transfer.seconds))

    # -- queries ------------------------------------------------------------------------------
    def timeline(self, mac: str) -> dict | None:
        boot = self.boots.get(mac.lower())
        if boot is None:
            return None
        events = list(boot.events)
        attached = boot.root_attached
        for s in self._live():
            if self.mac_by_ip.get(s.client.rsplit(":", 1)[0]) == boot.mac and s.export and s.started >= boot.started - 1:
                events.append(Event(s.started, "nbd", f"NBD {s.export} attached ({s.bytes_sent} bytes read so far)"))
                attached = True
        events.sort(key=lambda e: e.at)
        now = self.clock()
        last = max([boot.last] + [e.at for e in events])
        if attached:
            state = "root attached"
        elif now - last > STALL:
            failed = [e for e in events if not e.ok]
            state = f"stopped after: {(failed or events)[-1].what}" if events else "stopped"
        else:
            state = "in progress"
        return {"mac": boot.mac, "ip": boot.ip, "hostname": boot.hostname, "started": boot.started,
                "state": state, "seconds": round(last - boot.started, 3),
                "events": [{"at": e.at, "offset": round(e.at - boot.started, 3), "kind": e.kind,
                            "what": e.what, "ok": e.ok, "seconds": round(e.seconds, 3)} for e in events]}

    def status(self, recent: int = 100) -> dict:
        """/status section: the last boot (with its events) of the most recently active devices."""
        return {"devices": len(self.boots),
                "recent": {mac: self.timeline(mac) for mac in reversed(list(self.boots)[-recent:])}}

    # -- internals ----------------------------------------------------------------------------
    def _live(self) -> list[LiveSession]:
        return list(self.live_sessions()) if self.live_sessions is not None else []

    def _by_ip(self, ip: str, event: Event) -> None:
        mac = self.mac_by_ip.get(ip)
        boot = self.boots.get(mac) if mac else None
        if boot is not None:
            self._add(boot, event)

    def _add(self, boot: Boot, event: Event) -> None:
        if len(boot.events) < MAX_EVENTS:
            boot.events.append(event)
        boot.last = max(boot.last, event.at + event.seconds)
        if event.kind == "nbd" and event.ok:
            boot.root_attached = True
        self.boots[boot.mac] = boot
        self.boots.move_to_end(boot.mac)
        while len(self.boots) > MAX_DEVICES:
            gone, _ = self.boots.popitem(last=False)
            self.mac_by_ip = {ip: m for ip, m in self.mac_by_ip.items() if m != gone}


def format_timeline(report: dict) -> str:
    """``bootserverd status --device MAC``: one line per event, offsets from the first ACK."""
    lines = [f"{report['mac']}  {report.get('hostname') or '-'}  {report.get('ip') or '-'}  "
             f"last boot: {report['state']} ({report['seconds']:.1f} s)"]
    for e in report["events"]:
        took = f" ({e['seconds']:.2f} s)" if e["seconds"] else ""
        lines.append(f"  +{e['offset']:7.2f} s  {e['kind']:4}  {'ok ' if e['ok'] else 'ERR'}  {e['what']}{took}")
    return "\n".join(lines)
