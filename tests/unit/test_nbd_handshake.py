"""Handshake machine: every option, including the errors, as bytes."""

import struct
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nbd import codec as c  # noqa: E402
from nbd.exports import ExportInfo, OpenExport  # noqa: E402
from nbd.handshake import (BASE_FLAGS, MAX_OPTION_DATA, MAX_REQUEST, Close,  # noqa: E402
                           Handshake, Send, Transmit)


class Catalog:
    def __init__(self, **exports):
        self.exports = {n: ExportInfo(n, s, f"image {n}") for n, s in exports.items()}
        self.opened = []

    def names(self):
        return sorted(self.exports)

    def lookup(self, name):
        return self.exports.get(name)

    def open(self, name):
        e = self.exports.get(name)
        if e is None:
            return None
        self.opened.append(name)
        return OpenExport(e.name, e.size, e.description, fd=-1)   # the machine never reads it


def started(catalog=None, client_flags=c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES):
    hs = Handshake(catalog or Catalog(alpha=1 << 20, beta=4096))
    (greet,) = hs.start()
    assert greet == Send(c.greeting())
    assert hs.feed(struct.pack(">I", client_flags)) == []
    return hs


def replies(actions):
    """Decode Send actions into (option, type, data) triples."""
    blob = b"".join(a.data for a in actions if isinstance(a, Send))
    out = []
    while blob:
        magic, opt, typ, n = c.OPTION_REPLY_HEADER.unpack_from(blob)
        assert magic == c.OPTION_REPLY_MAGIC
        out.append((opt, typ, blob[20:20 + n]))
        blob = blob[20 + n:]
    return out


def info_payload(name, *infos):
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + struct.pack(f">H{len(infos)}H", len(infos), *infos)


def meta_payload(name, *queries):
    raw = name.encode()
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for q in queries:
        out += struct.pack(">I", len(q)) + q.encode()
    return out


def test_unknown_client_flags_close():
    hs = Handshake(Catalog())
    hs.start()
    (act,) = hs.feed(struct.pack(">I", 0x8))
    assert isinstance(act, Close) and "client flags" in act.reason


def test_bad_option_magic_closes():
    hs = started()
    (act,) = hs.feed(struct.pack(">QII", 0x1234, c.OPT_LIST, 0))
    assert isinstance(act, Close)


def test_list_names_every_export_then_ack():
    hs = started()
    got = replies(hs.feed(c.option_request(c.OPT_LIST)))
    assert got == [(3, c.REP_SERVER, c.rep_server("alpha")),
                   (3, c.REP_SERVER, c.rep_server("beta")), (3, c.REP_ACK, b"")]


def test_list_with_data_is_invalid():
    hs = started()
    assert replies(hs.feed(c.option_request(c.OPT_LIST, b"x")))[0][1] == c.REP_ERR_INVALID


def test_bytes_may_arrive_one_at_a_time():
    hs = started()
    actions = []
    for b in c.option_request(c.OPT_LIST):
        actions += hs.feed(bytes([b]))
    assert [r[1] for r in replies(actions)] == [c.REP_SERVER, c.REP_SERVER, c.REP_ACK]


def test_abort_acks_and_closes():
    hs = started()
    acts = hs.feed(c.option_request(c.OPT_ABORT))
    assert replies(acts) == [(2, c.REP_ACK, b"")]
    assert isinstance(acts[-1], Close) and hs.done


def test_starttls_is_refused_by_policy_and_negotiation_goes_on():
    hs = started()
    (r,) = replies(hs.feed(c.option_request(c.OPT_STARTTLS)))
    assert r[1] == c.REP_ERR_POLICY and b"TLS" in r[2]
    assert replies(hs.feed(c.option_request(c.OPT_LIST)))[-1][1] == c.REP_ACK


@pytest.mark.parametrize("opt", [4, 11, 12, 99, 0xFFFFFFFF])
def test_unknown_options_are_unsup(opt):
    hs = started()
    (r,) = replies(hs.feed(c.option_request(opt, b"abc")))
    assert r[:2] == (opt, c.REP_ERR_UNSUP)


def test_oversized_option_is_skipped_and_answered_too_big():
    hs = started()
    n = MAX_OPTION_DATA + 10
    acts = hs.feed(struct.pack(">QII", c.IHAVEOPT, c.OPT_LIST, n) + bytes(1000))
    assert acts == []
    acts = hs.feed(bytes(n - 1000) + c.option_request(c.OPT_STRUCTURED_REPLY))
    assert [r[1] for r in replies(acts)] == [c.REP_ERR_TOO_BIG, c.REP_ACK]


def test_export_name_enters_transmission_without_zeroes():
    cat = Catalog(alpha=1 << 20)
    hs = started(cat)
    acts = hs.feed(c.option_request(c.OPT_EXPORT_NAME, b"alpha") + b"tail")
    assert acts[0] == Send(struct.pack(">QH", 1 << 20, BASE_FLAGS))
    t = acts[1]
    assert isinstance(t, Transmit) and t.export.name == "alpha" and t.leftover == b"tail"
    assert not t.structured and hs.done and cat.opened == ["alpha"]


def test_export_name_sends_zeroes_when_client_did_not_opt_out():
    hs = started(client_flags=c.FLAG_C_FIXED_NEWSTYLE)
    acts = hs.feed(c.option_request(c.OPT_EXPORT_NAME, b"beta"))
    assert len(acts[0].data) == 134


def test_export_name_unknown_is_a_hard_disconnect():
    hs = started()
    (act,) = hs.feed(c.option_request(c.OPT_EXPORT_NAME, b"nope"))
    assert isinstance(act, Close) and "nope" in act.reason


def test_info_answers_export_name_description_block_size_and_stays_in_haggling():
    cat = Catalog(alpha=1 << 20)
    hs = started(cat)
    got = replies(hs.feed(c.option_request(
        c.OPT_INFO, info_payload("alpha", c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE))))
    assert got == [
        (6, c.REP_INFO, c.info_export(1 << 20, BASE_FLAGS)),
        (6, c.REP_INFO, c.info_name("alpha")),
        (6, c.REP_INFO, c.info_description("image alpha")),
        (6, c.REP_INFO, c.info_block_size(1, 4096, MAX_REQUEST)),
        (6, c.REP_ACK, b""),
    ]
    assert not hs.done and cat.opened == []     # INFO does not hold the file open


def test_info_unknown_export_lets_the_client_retry():
    hs = started()
    (r,) = replies(hs.feed(c.option_request(c.OPT_INFO, info_payload("nope"))))
    assert r[1] == c.REP_ERR_UNKNOWN
    acts = hs.feed(c.option_request(c.OPT_GO, info_payload("alpha")))
    assert isinstance(acts[-1], Transmit)


def test_info_malformed_is_invalid():
    hs = started()
    (r,) = replies(hs.feed(c.option_request(c.OPT_GO, b"\x00\x00")))
    assert r[1] == c.REP_ERR_INVALID and not hs.done


def test_go_after_structured_reply_advertises_df_and_enters_transmission():
    hs = started()
    hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY))
    acts = hs.feed(c.option_request(c.OPT_GO, info_payload("beta")))
    got = replies(acts)
    assert got[0] == (7, c.REP_INFO, c.info_export(4096, BASE_FLAGS | c.FLAG_SEND_DF))
    assert got[-1] == (7, c.REP_ACK, b"")
    t = acts[-1]
    assert isinstance(t, Transmit) and t.structured and t.flags & c.FLAG_SEND_DF
    assert t.flags & c.FLAG_READ_ONLY and t.flags & c.FLAG_CAN_MULTI_CONN


def test_structured_reply_with_data_is_invalid():
    hs = started()
    (r,) = replies(hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY, b"x")))
    assert r[1] == c.REP_ERR_INVALID


def test_meta_context_needs_structured_replies():
    hs = started()
    (r,) = replies(hs.feed(c.option_request(c.OPT_LIST_META_CONTEXT, meta_payload("alpha"))))
    assert r[1] == c.REP_ERR_INVALID


@pytest.mark.parametrize("queries,listed", [
    ((), True), (("base:",), True), (("base:allocation",), True),
    (("qemu:dirty-bitmap:x",), False), (("base:other",), False)])
def test_list_meta_context(queries, listed):
    hs = started()
    hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY))
    got = replies(hs.feed(c.option_request(c.OPT_LIST_META_CONTEXT,
                                           meta_payload("alpha", *queries))))
    expect = [(9, c.REP_META_CONTEXT, c.meta_context(0, "base:allocation"))] if listed else []
    assert got == expect + [(9, c.REP_ACK, b"")]


def test_set_meta_context_selects_base_allocation_for_go():
    hs = started()
    hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY))
    got = replies(hs.feed(c.option_request(c.OPT_SET_META_CONTEXT,
                                           meta_payload("alpha", "base:allocation"))))
    assert got == [(10, c.REP_META_CONTEXT, c.meta_context(1, "base:allocation")),
                   (10, c.REP_ACK, b"")]
    t = hs.feed(c.option_request(c.OPT_GO, info_payload("alpha")))[-1]
    assert t.contexts == {1: "base:allocation"}


def test_meta_contexts_do_not_carry_to_another_export():
    hs = started()
    hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY))
    hs.feed(c.option_request(c.OPT_SET_META_CONTEXT, meta_payload("alpha", "base:allocation")))
    t = hs.feed(c.option_request(c.OPT_GO, info_payload("beta")))[-1]
    assert t.contexts == {}


def test_meta_context_unknown_export_and_malformed():
    hs = started()
    hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY))
    (r,) = replies(hs.feed(c.option_request(c.OPT_SET_META_CONTEXT, meta_payload("zz"))))
    assert r[1] == c.REP_ERR_UNKNOWN
    (r,) = replies(hs.feed(c.option_request(c.OPT_SET_META_CONTEXT, b"\x00\x00\x00\x09ab")))
    assert r[1] == c.REP_ERR_INVALID


def test_endless_haggling_is_cut_off():
    hs = started()
    acts = hs.feed(c.option_request(c.OPT_STRUCTURED_REPLY) * 1100)
    assert isinstance(acts[-1], Close) and hs.done
