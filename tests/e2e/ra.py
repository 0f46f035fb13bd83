"""Send IPv6 router advertisements (no prefix, M=O=0, router lifetime 0) on one interface.

iPXE's ``autoboot`` waits for every configurator: without any RA it spends ~16 s on IPv6
before booting. An RA with no stateful/other flags ends its IPv6 configuration at once.
A school LAN normally has its router do this; the test network has only us.

    python ra.py IFACE SECONDS      (run inside the server namespace; stop it by PID)
"""

from __future__ import annotations

import sys
import time


def main(iface: str, seconds: float) -> int:
    from scapy.all import Ether, IPv6, ICMPv6ND_RA, ICMPv6NDOptSrcLLAddr, conf, get_if_hwaddr, sendp
    conf.verb = 0
    mac = get_if_hwaddr(iface)
    # the IPv6 source must be link-local for the RA to be valid
    b = bytes.fromhex(mac.replace(":", ""))
    eui = bytes([b[0] ^ 2]) + b[1:3] + b"\xff\xfe" + b[3:]
    src = "fe80::" + ":".join(eui[i:i + 2].hex() for i in range(0, 8, 2))
    packet = (Ether(src=mac, dst="33:33:00:00:00:01") / IPv6(src=src, dst="ff02::1", hlim=255)
              / ICMPv6ND_RA(M=0, O=0, routerlifetime=0) / ICMPv6NDOptSrcLLAddr(lladdr=mac))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:        # bounded: the caller kills us sooner
        sendp(packet, iface=iface)
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], float(sys.argv[2])))
