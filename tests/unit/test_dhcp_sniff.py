"""dhcp.sniff: the decisions taken on undecoded datagrams, bytes only — which packets start a
new exchange (answered last under a backlog), and who a malformed packet is blamed on."""

from hypothesis import given, strategies as st

from dhcp import options as O
from dhcp.codec import Message, encode
from dhcp.sniff import answer_order, sender, starts_exchange

CHADDR = bytes.fromhex("5254001234ab")


def packet(kind: int, xid: int = 7, *opts) -> bytes:
    return encode(Message(op=1, xid=xid, chaddr=CHADDR,
                          options=((O.MESSAGE_TYPE, O.u8(kind)),) + tuple(opts)))


def test_discover_starts_an_exchange_the_rest_do_not():
    assert starts_exchange(packet(O.DISCOVER))
    for kind in (O.REQUEST, O.DECLINE, O.RELEASE, O.INFORM):
        assert not starts_exchange(packet(kind))


def test_option_53_need_not_come_first():
    options = bytes((O.CLIENT_ARCH, 2, 0, 7, O.MESSAGE_TYPE, 1, O.DISCOVER, 255))
    assert starts_exchange(packet(O.REQUEST)[:240] + options)


def test_the_fixed_header_is_not_searched():
    # a REQUEST whose xid (offset 4) or chaddr holds the DISCOVER option's bytes
    request = bytearray(packet(O.REQUEST))
    request[4:7] = b"\x35\x01\x01"
    request[28:31] = b"\x35\x01\x01"
    assert not starts_exchange(bytes(request))
    assert not starts_exchange(b"\x35\x01\x01")            # a stray fragment


def test_answer_order_puts_new_exchanges_last_keeping_arrival_order():
    batch = [(packet(O.DISCOVER, 1), "a"), (packet(O.REQUEST, 2), "b"),
             (packet(O.DISCOVER, 3), "c"), (packet(O.RELEASE, 4), "d"), (b"junk", "e")]
    assert [tag for _, tag in answer_order(batch)] == ["b", "d", "e", "a", "c"]
    assert answer_order([]) == []


def test_a_malformed_packet_is_blamed_on_its_mac_when_it_has_one():
    assert sender(packet(O.DISCOVER)[:34], "10.0.0.9") == "52:54:00:12:34:ab"
    assert sender(packet(O.DISCOVER)[:33], "10.0.0.9") == "10.0.0.9"
    assert sender(b"", "0.0.0.0") == "0.0.0.0"


@given(st.binary(max_size=600))
def test_any_bytes_get_an_answer(data):
    assert isinstance(starts_exchange(data), bool)
    who = sender(data, "10.0.0.9")
    assert who == (data[28:34].hex(":") if len(data) >= 34 else "10.0.0.9")
