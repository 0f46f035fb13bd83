"""Looks at raw datagrams before (or instead of) decoding them. Pure: bytes in, answers out.

Two decisions the adapter takes on undecoded packets:
- the order a read batch is answered in: under a backlog, exchanges already offered (REQUEST,
  DECLINE, RELEASE, INFORM) go before new ones (DISCOVER) — a late ACK is wasted work, a late
  OFFER only costs the client a retry;
- who a malformed packet is blamed on in the log: the client hardware address when the fixed
  header is there to hold one, else the source address.
"""

from __future__ import annotations

from typing import Sequence, TypeVar

OPTIONS_AT = 240                   # 236-byte fixed header + the 4-byte magic cookie
CHADDR = slice(28, 34)             # the first six bytes of chaddr: an Ethernet MAC
DISCOVER_OPTION = b"\x35\x01\x01"  # option 53, length 1, DHCPDISCOVER

T = TypeVar("T", bound=Sequence)


def starts_exchange(data: bytes) -> bool:
    """Whether the datagram looks like a DISCOVER. A heuristic, not a parse: the option is
    searched for past the fixed header (where xid or chaddr could hold the same bytes), and
    a wrong guess only changes the answering order within one batch."""
    return data.find(DISCOVER_OPTION, OPTIONS_AT) >= 0


def answer_order(batch: list[T]) -> list[T]:
    """`batch` (items whose first element is the datagram), exchanges in progress first, new
    ones after; arrival order kept within each group."""
    return sorted(batch, key=lambda item: starts_exchange(item[0]))


def sender(data: bytes, src: str) -> str:
    """Who a packet that failed to decode came from, as the log names it: the MAC in chaddr
    when the packet reaches that far, else the source address (`src`)."""
    if len(data) >= CHADDR.stop:
        return data[CHADDR].hex(":")
    return src
