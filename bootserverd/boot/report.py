"""The boot report: what each device did on its last boot, from every service, in one place.

Services report through their hooks (DHCP ACK, a file fetched over TFTP or HTTP, an NBD
session ended) and the NBD service is asked for its live sessions (an attached root never
"ends" while the machine runs). Clients are known by MAC from their DHCP lease; TFTP, HTTP
and NBD only see an address, mapped back through the last ACK for it.

A new boot starts with a DHCP ACK once the previous boot reached its NBD root or went quiet
for BOOT_GAP seconds; the firmware, iPXE and the initramfs each ACK within one boot. Each boot
ends in one outcome, counted once (``on_outcome``): "booted" once its root is attached,
"stopped" once it is final that it never will be (see ``sweep``); it is *shown* as stopped
after ``stall`` quiet seconds.
Pure bookkeeping: no I/O, time comes from ``clock`` (the reactor's seconds()).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable, Iterable

from bootserverd.boot.stages import LABELS, furthest, stage_of
from bootserverd.ops.transfers import Transfer

BOOT_GAP = 300.0          # quiet seconds after which an ACK is a new boot
STALL = 60.0              # an unfinished boot quiet this long is reported as stopped
BOOTED_AFTER = 30.0       # a root attached this long is reported as booted
MAX_DEVICES = 20000       # bounded memory: the least recently active device is forgotten
MAX_EVENTS = 100          # per boot (a menu loop retrying must not grow without bound)
_AT = attrgetter("at")


@dataclass(frozen=True)
class Event:
    at: float                 # when it began (clock seconds)
    kind: str                 # dhcp | tftp | http | nbd | menu (an error menu was served)
    what: str
    ok: bool = True
    seconds: float = 0.0      # how long it took (transfers, sessions)
    stage: str = "dhcp"       # bootserverd.boot.stages
    image: str | None = None  # the export an NBD session read


@dataclass
class Boot:
    mac: str
    ip: str | None
    hostname: str | None
    started: float
    events: list[Event] = field(default_factory=list)
    root_attached: bool = False
    last: float = 0.0
    counted: bool = False     # its outcome went to on_outcome


@dataclass(frozen=True)
class LiveSession:
    client: str
    export: str | None
    started: float
    bytes_sent: int


class BootReport:
    def __init__(self, clock: Callable[[], float],
                 live_sessions: Callable[[], Iterable[LiveSession]] | None = None, *,
                 stall: float = STALL, booted_after: float = BOOTED_AFTER,
                 on_outcome: Callable[[str], None] | None = None):
        self.clock = clock
        self.live_sessions = live_sessions
        self.stall = stall
        self.booted_after = booted_after
        self.on_outcome = on_outcome          # "booted" | "stopped", once per boot (metrics)
        self.boots: OrderedDict[str, Boot] = OrderedDict()
        self.mac_by_ip: dict[str, str] = {}

    # -- hooks --------------------------------------------------------------------------------
    def dhcp_lease(self, lease, renewal: bool = False) -> None:
        """DHCPService(on_lease=): a dhcp.leases.Lease row made durable; ``renewal``: the
        client extended a lease it holds (RENEWING/REBINDING), which a running machine does
        every half lease — not part of a boot."""
        if getattr(lease, "state", None) != "bound":
            return
        now = self.clock()
        mac, ip = lease.mac, str(lease.ip)
        self.mac_by_ip[ip] = mac
        if renewal:
            return
        boot = self.boots.get(mac)
        if boot is None or boot.root_attached or now - boot.last > BOOT_GAP:
            if boot is not None and not boot.counted:
                self._count(boot, "booted" if boot.root_attached else "stopped")
            boot = Boot(mac, ip, lease.hostname, started=now)
        boot.ip, boot.hostname = ip, lease.hostname or boot.hostname
        self._add(boot, Event(now, "dhcp", f"ACK {ip}" + (f" ({lease.hostname})" if lease.hostname else "")))

    def transfer(self, transfer: Transfer) -> None:
        """Every service's ``on_transfer=``: a file sent over TFTP or HTTP, an NBD session ended
        (bootserverd.ops.transfers.Transfer). An NBD session that reached its export means the
        root was attached."""
        stage = stage_of(transfer.service, transfer.what)
        if stage == "root" and transfer.ok and transfer.seconds >= self.booted_after:
            stage = "booted"
        self._by_ip(transfer.client, Event(self.clock() - transfer.seconds, transfer.service, transfer.summary,
                                           transfer.ok, transfer.seconds, stage,
                                           transfer.what if transfer.service == "nbd" and transfer.what else None))

    def boot_problem(self, mac: str, problem: str) -> None:
        """BootResolver(on_problem=): the device was sent a menu whose one entry is an error
        (image not published, device disabled...): that is where and why its boot stops."""
        boot = self.boots.get(mac)
        if boot is not None and not boot.root_attached:
            if not any(e.kind == "menu" and e.what.endswith(problem) for e in boot.events):
                self._add(boot, Event(self.clock(), "menu", f"boot menu shows an error: {problem}", ok=False,
                                      stage="loader"))

    def sweep(self) -> None:
        """Count the outcome of every boot that has a final one now (the app calls this
        periodically). A boot shown as stopped may still attach its root (a kernel can boot
        quietly for a while): it is counted as stopped only once quiet for BOOT_GAP, when its
        next ACK would start a new boot anyway."""
        live = self._live_index()
        now = self.clock()
        for boot in list(self.boots.values()):
            if not boot.counted:
                summary = self._summary(boot, live, now, with_events=False)
                if summary["state"] in ("root attached", "booted"):
                    self._count(boot, "booted")
                elif now - (boot.started + summary["seconds"]) > max(self.stall, BOOT_GAP):
                    self._count(boot, "stopped")

    # -- queries ------------------------------------------------------------------------------
    def timeline(self, mac: str) -> dict | None:
        boot = self.boots.get(mac.lower())
        return None if boot is None else self._summary(boot, self._live_index(), self.clock())

    def summaries(self, events: bool = True) -> list[dict]:
        """Every device's last boot (as ``timeline``; without its ``events`` list unless asked),
        most recently active first; the live sessions are asked once for all of them."""
        live, now = self._live_index(), self.clock()
        return [self._summary(boot, live, now, events) for boot in reversed(self.boots.values())]

    def timelines(self, macs) -> list[dict]:
        """``timeline`` of each of ``macs`` that has a boot, the live sessions asked once."""
        live, now = self._live_index(), self.clock()
        return [self._summary(self.boots[mac], live, now) for mac in macs if mac in self.boots]

    def status(self, recent: int = 100) -> dict:
        """/status section: the last boot (with its events) of the most recently active devices."""
        live, now = self._live_index(), self.clock()
        latest = list(self.boots.values())[-recent:]
        return {"devices": len(self.boots),
                "recent": {boot.mac: self._summary(boot, live, now) for boot in reversed(latest)}}

    # -- internals ----------------------------------------------------------------------------
    def _summary(self, boot: Boot, live: dict[str, list[LiveSession]], now: float, with_events: bool = True) -> dict:
        events = list(boot.events)
        attached = boot.root_attached
        for s in live.get(boot.ip or "", ()):
            if s.started >= boot.started - 1:
                stage = "booted" if now - s.started >= self.booted_after else "root"
                events.append(Event(s.started, "nbd", f"NBD {s.export} attached ({s.bytes_sent} bytes read so far)",
                                    stage=stage, image=s.export))
                attached = True
        events.sort(key=_AT)
        last = max([boot.last] + [e.at for e in events])
        stage = furthest(e.stage for e in events if e.ok)
        failures = [e for e in events if not e.ok]
        if stage == "booted":
            state = "booted"
        elif attached:
            state = "root attached"
        elif now - last > self.stall:
            state = f"stopped after: {(failures or events)[-1].what}" if events else "stopped"
        else:
            state = "in progress"
        images = [e.image for e in events if e.image]
        summary = {"mac": boot.mac, "ip": boot.ip, "hostname": boot.hostname, "started": boot.started,
                   "state": state, "stage": stage, "stage_label": LABELS.get(stage, "-"),
                   "image": images[-1] if images else None, "seconds": round(last - boot.started, 3),
                   "failure": failures[-1].what if failures and not attached else None}
        if with_events:
            started = boot.started
            summary["events"] = [{"at": e.at, "offset": round(e.at - started, 3), "kind": e.kind, "what": e.what,
                                  "ok": e.ok, "seconds": round(e.seconds, 3) if e.seconds else 0.0,
                                  "stage": e.stage} for e in events]
        return summary

    def _live_index(self) -> dict[str, list[LiveSession]]:
        index: dict[str, list[LiveSession]] = {}
        if self.live_sessions is not None:
            for s in self.live_sessions():
                if s.export:
                    index.setdefault(s.client.rsplit(":", 1)[0], []).append(s)
        return index

    def _count(self, boot: Boot, outcome: str) -> None:
        boot.counted = True
        if self.on_outcome is not None:
            self.on_outcome(outcome)

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
