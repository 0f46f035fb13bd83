"""``bootserverd selftest``: each service exercised as a client would, from the server itself.

  dhcp  a PXE DISCOVER (built with scapy) broadcast on the interface; every server that
        answers is listed. A second DHCP server on the LAN (a pupil's home router) is the
        classic outage: in server mode any other answer fails the check.
  tftp  the BIOS boot loader downloaded with a plain RFC 1350 client.
  nbd   newstyle handshake for the default (or first) image and its first 4 KiB read.
  http  GET /status.
Prints a table and exits 1 when a check fails.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bootserverd.config import settings as configmod

TIMEOUT = 5.0


@dataclass
class Check:
    name: str
    ok: bool
    seconds: float
    detail: str


def _host(listen, config: configmod.Config) -> str:
    """Where a client on this host reaches a listener bound to ``listen``."""
    if listen.host in ("0.0.0.0", "::"):
        return str(config.server.address)
    return listen.host


def _timed(name: str, function) -> Check:
    started = time.monotonic()
    try:
        ok, detail = function()
    except Exception as exc:     # any failure is a result of the check, not a crash
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return Check(name, ok, time.monotonic() - started, detail)


# -- DHCP ----------------------------------------------------------------------------------------
def discover_packet(mac: bytes, xid: int) -> bytes:
    from scapy.layers.dhcp import BOOTP, DHCP
    bootp = BOOTP(op=1, chaddr=mac + b"\0" * 10, xid=xid, flags=0x8000)
    options = [("message-type", "discover"), ("vendor_class_id", b"PXEClient:Arch:00000:UNDI:002001"),
               (93, b"\x00\x00"), ("param_req_list", [1, 3, 6, 12, 43, 60, 66, 67]), "end"]
    return bytes(bootp / DHCP(options=options))


def dhcp_servers(interface: str, seconds: float = 3.0) -> list[tuple[str, str, str]]:
    """Broadcast one DISCOVER on ``interface``; (server id, offered address, boot file) per answer.
    Sent through a UDP socket so that our own daemon (on this host) hears it too; replies are
    read with a packet socket, which sees our daemon's outgoing answer and everyone else's."""
    from scapy.all import AsyncSniffer
    from scapy.layers.dhcp import BOOTP, DHCP
    mac = bytes([0x02]) + os.urandom(5)           # locally administered: never a real device
    xid = int.from_bytes(os.urandom(4), "big")
    from scapy.layers.inet import UDP
    # lfilter, not a BPF filter: that would need libpcap
    sniffer = AsyncSniffer(iface=interface, store=True, lfilter=lambda p: UDP in p and p[UDP].dport == 68)
    sniffer.start()
    time.sleep(0.3)                                # the capture must be running before we send
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            sock.sendto(discover_packet(mac, xid), ("255.255.255.255", 67))
            time.sleep(seconds)
    finally:
        packets = sniffer.stop() or []
    answers = {}
    for packet in packets:
        if BOOTP not in packet or packet[BOOTP].xid != xid or packet[BOOTP].op != 2:
            continue
        options = {o[0]: o[1] for o in packet[DHCP].options if isinstance(o, tuple)} if DHCP in packet else {}
        server = options.get("server_id") or packet[BOOTP].siaddr
        bootfile = options.get("boot-file-name") or packet[BOOTP].file
        if isinstance(bootfile, bytes):
            bootfile = bootfile.rstrip(b"\0").decode("latin-1")
        answers[str(server)] = (str(server), str(packet[BOOTP].yiaddr), bootfile or "-")
    return list(answers.values())


def check_dhcp(config: configmod.Config, interface: str) -> Check:
    def run():
        servers = dhcp_servers(interface)
        ours = str(config.server.address)
        listed = "; ".join(f"{s} offers {ip} file {f}" for s, ip, f in servers) or "no answer"
        others = [s for s, _, _ in servers if s != ours]
        if not any(s == ours for s, _, _ in servers):
            return False, f"bootserverd ({ours}) did not answer: {listed}"
        if others and config.dhcp.mode == "server":
            return False, f"ANOTHER DHCP SERVER answers on {interface}: {', '.join(others)} ({listed})"
        return True, listed
    return _timed(f"dhcp ({interface})", run)


# -- TFTP ----------------------------------------------------------------------------------------
def check_tftp(config: configmod.Config) -> Check:
    def run():
        name = config.boot.loaders.bios
        host = _host(config.tftp.listen, config)
        size = tftp_download_size(host, config.tftp.listen.port, name)
        return size > 0, f"{name}: {size} bytes from {host}:{config.tftp.listen.port}"
    return _timed("tftp", run)


def tftp_download_size(host: str, port: int, name: str, timeout: float = 2.0, max_blocks: int = 1 << 16) -> int:
    """A plain RFC 1350 lock-step read with our own codec (Debian has no python3-tftpy):
    the byte count, or an exception saying what went wrong."""
    from tftp import codec
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(codec.encode(codec.Request(codec.RRQ, name, "octet")), (host, port))
        size, expected = 0, 1
        for _ in range(max_blocks):
            packet, peer = sock.recvfrom(65536)
            reply = codec.decode(packet)
            if isinstance(reply, codec.Error):
                raise RuntimeError(f"TFTP error {reply.code}: {reply.message}")
            if not isinstance(reply, codec.Data) or reply.block != expected & 0xFFFF:
                continue
            size += len(reply.payload)
            sock.sendto(codec.encode(codec.Ack(reply.block)), peer)
            if len(reply.payload) < 512:
                return size
            expected += 1
        raise RuntimeError(f"more than {max_blocks} blocks")


# -- NBD -----------------------------------------------------------------------------------------
NBD_MAGIC, IHAVEOPT, REQUEST, SIMPLE_REPLY = 0x4e42444d41474943, 0x49484156454F5054, 0x25609513, 0x67446698


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"server closed the connection ({len(data)} of {n} bytes read)")
        data += chunk
    return data


def nbd_first_block(host: str, port: int, export: str) -> tuple[int, bytes]:
    """Fixed-newstyle handshake with NBD_OPT_EXPORT_NAME, one 4 KiB read, clean disconnect."""
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        magic, opt, _flags = struct.unpack(">QQH", _recv(sock, 18))
        if (magic, opt) != (NBD_MAGIC, IHAVEOPT):
            raise ValueError("not a newstyle NBD server")
        sock.sendall(struct.pack(">I", 3))                  # FIXED_NEWSTYLE | NO_ZEROES
        name = export.encode()
        sock.sendall(struct.pack(">QII", IHAVEOPT, 1, len(name)) + name)
        size, _ = struct.unpack(">QH", _recv(sock, 10))
        sock.sendall(struct.pack(">IHHQQI", REQUEST, 0, 0, 1, 0, 4096))
        magic, error, handle = struct.unpack(">IIQ", _recv(sock, 16))
        if magic != SIMPLE_REPLY or handle != 1 or error:
            raise ValueError(f"read failed: magic {magic:#x} error {error}")
        block = _recv(sock, 4096)
        sock.sendall(struct.pack(">IHHQQI", REQUEST, 0, 2, 2, 0, 0))   # NBD_CMD_DISC
        return size, block


def check_nbd(config: configmod.Config, export: str | None) -> Check:
    def run():
        if export is None:
            return False, f"no image published in {config.images.dir}"
        host = _host(config.nbd.listen, config)
        size, block = nbd_first_block(host, config.nbd.listen.port, export)
        kind = "squashfs" if block[:4] == b"hsqs" else "not a squashfs!"
        return block[:4] == b"hsqs", f"{export}: {size} bytes, first block {kind}"
    return _timed("nbd", run)


# -- HTTP ----------------------------------------------------------------------------------------
def http_status(config: configmod.Config) -> dict:
    url = f"http://{_host(config.http.listen, config)}:{config.http.listen.port}/status"
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return json.loads(response.read())


def check_http(config: configmod.Config) -> tuple[Check, dict | None]:
    status = {}

    def run():
        status.update(http_status(config))
        return True, f"/status: version {status.get('version')}, {len(status.get('images', []))} images"
    return _timed("http", run), status or None


def run_selftest(config: configmod.Config, interface: str | None) -> list[Check]:
    checks = []
    status = None
    if config.http.enabled:
        check, status = check_http(config)
        checks.append(check)
    if config.dhcp.enabled or interface:
        interface = interface or (config.dhcp.interfaces[0] if config.dhcp.interfaces else None)
        if interface is None:
            checks.append(Check("dhcp", False, 0.0, "name an interface: --interface IF"))
        else:
            checks.append(check_dhcp(config, interface))
    if config.tftp.enabled:
        checks.append(check_tftp(config))
    if config.nbd.enabled:
        names = [i["name"] for i in (status or {}).get("images", [])]
        if not names:
            names = sorted(p.stem for p in Path(config.images.dir).glob("*.img"))
        default = config.images.default
        checks.append(check_nbd(config, default if default in names else (names[0] if names else None)))
    return checks


def format_table(checks: list[Check]) -> str:
    lines = [f"{'CHECK':22} {'RESULT':6} {'SECONDS':>7}  DETAIL"]
    for c in checks:
        lines.append(f"{c.name:22} {'pass' if c.ok else 'FAIL':6} {c.seconds:7.2f}  {c.detail}")
    return "\n".join(lines)
