"""Which datagrams on the well-known port start a transfer (tftp.admission), and what the record
of a finished or refused transfer says (tftp.session.TransferRecord): plain bytes in, verdicts out."""
import pytest

from tftp import codec
from tftp.admission import BUSY, DUPLICATE, Admission, Admit, Ignore, Refuse
from tftp.codec import Ack, Data, Error, OAck, Request
from tftp.netascii import MAX_SIZE, NetasciiFile
from tftp.session import Finish, Policy, ReadSession, TransferRecord, reply_to_stranger

A, B = ("10.0.0.5", 2000), ("10.0.0.6", 2000)


def rrq(name="f", mode="octet", *opts) -> bytes:
    return codec.encode(Request(codec.RRQ, name, mode, tuple(opts)))


class File:
    def __init__(self, data: bytes = b"", size: int | None = None) -> None:
        self.data, self.size = data, len(data) if size is None else size

    def read(self, offset, length):
        return self.data[offset:offset + length]

    def close(self):
        pass


def test_a_read_request_is_admitted_with_its_duplicate_key():
    v = Admission().decide(rrq("pxelinux.0", "OCTET", ("blksize", "1468")), A, {})
    assert v == Admit((A, rrq("pxelinux.0", "OCTET", ("blksize", "1468"))),
                      Request(codec.RRQ, "pxelinux.0", "octet", (("blksize", "1468"),)))


def test_a_retransmitted_rrq_of_a_running_transfer_is_ignored():
    adm = Admission(max_per_client=1)
    key = adm.decide(rrq(), A, {}).key
    adm.begin(A[0])
    assert adm.decide(rrq(), A, {key: "running"}) is DUPLICATE     # not the per-client refusal
    assert isinstance(adm.decide(rrq(), ("10.0.0.5", 2001), {key: "running"}), Refuse)   # a new port


@pytest.mark.parametrize("raw,code", [
    (b"\x00", codec.E_ILLEGAL), (b"\x00\x09junk", codec.E_ILLEGAL),
    (b"\x00\x01name-without-nul", codec.E_ILLEGAL),
    (codec.encode(Ack(3)), codec.E_UNKNOWN_TID), (codec.encode(Data(1, b"x")), codec.E_UNKNOWN_TID),
    (codec.encode(OAck((("tsize", "1"),))), codec.E_UNKNOWN_TID),
])
def test_stray_and_malformed_packets_get_an_error_and_no_record(raw, code):
    v = Admission().decide(raw, A, {})
    assert type(v) is Refuse and v.code == code and v.request is None
    assert (v.malformed is not None) == (code == codec.E_ILLEGAL)     # only those are logged


@pytest.mark.parametrize("raw", [codec.encode(Error(0, "bye")), b"\x00\x05\x00"])
def test_errors_are_never_answered(raw):
    assert Admission().decide(raw, A, {}) == Ignore()


def test_write_request_and_unknown_mode_are_refused_and_recorded():
    wrq = codec.encode(Request(codec.WRQ, "new.bin", "octet"))
    assert Admission().decide(wrq, A, {}) == Refuse(codec.E_ACCESS, "read-only server",
                                                     Request(codec.WRQ, "new.bin", "octet"))
    v = Admission().decide(rrq(mode="mail"), A, {})
    assert (v.code, v.message, v.request.mode) == (codec.E_ILLEGAL, "unsupported mode 'mail'", "mail")


def test_per_client_cap_counts_running_transfers_of_that_host_only():
    adm = Admission(max_per_client=2)
    for _ in range(2):
        assert type(adm.decide(rrq(), A, {})) is Admit
        adm.begin(A[0])
    assert adm.decide(rrq(), A, {}) == Refuse(0, "too many transfers from this client",
                                              Request(codec.RRQ, "f", "octet"))
    assert type(adm.decide(rrq(), B, {})) is Admit
    adm.end(A[0])
    assert type(adm.decide(rrq(), A, {})) is Admit
    adm.end(A[0])
    assert adm.per_client.as_dict() == {}


def test_a_full_server_drops_silently_and_counts():
    adm = Admission(max_transfers=2)
    running = {("x", 1): 1, ("y", 2): 2}
    assert adm.decide(rrq(), A, running) is BUSY
    assert adm.decide(rrq(), B, running) is BUSY
    assert adm.refused_busy == 2
    assert type(adm.decide(rrq(), A, {("x", 1): 1})) is Admit     # a slot frees: the retry gets it


def test_limits_apply_to_the_next_request():
    adm = Admission(max_transfers=1)
    assert adm.decide(rrq(), A, {("x", 1): 1}) is BUSY
    adm.max_transfers = 2
    assert type(adm.decide(rrq(), A, {("x", 1): 1})) is Admit


def test_view_octet_is_the_file_netascii_is_converted_and_image_sized_is_refused():
    adm, policy = Admission(), Policy()
    octet, text = Request(codec.RRQ, "f", "octet"), Request(codec.RRQ, "t", "netascii")
    f = File(b"a\nb")
    assert adm.view(octet, f, policy) is f
    view = adm.view(text, f, policy)
    assert isinstance(view, NetasciiFile) and view.size == 4 and view.read(0, 4) == b"a\r\nb"
    assert adm.view(text, File(b"x" * MAX_SIZE), policy).size == MAX_SIZE   # the limit itself is served
    assert adm.view(text, File(size=MAX_SIZE + 1), policy) == Refuse(
        0, "file too large for netascii mode, use octet", text)


def test_reply_to_a_stranger_is_error_5_unless_it_is_an_error():
    assert codec.decode(reply_to_stranger(codec.encode(Ack(1)))) == Error(5, "unknown transfer ID")
    assert codec.decode(reply_to_stranger(b"junk")) == Error(5, "unknown transfer ID")
    assert reply_to_stranger(codec.encode(Error(0, "x"))) is None


# ---- the record --------------------------------------------------------------------------
def finished(outcome, ok=False, size=10):
    return TransferRecord("10.0.0.5", 2000, "f", "octet", size, 0, 1.0, 512, 1, (), 0, ok, outcome)


@pytest.mark.parametrize("record,kind", [
    (finished("ok", ok=True), "done"),
    (TransferRecord.refused(A, Request(codec.RRQ, "nope", "octet"), "file not found"), "refused"),
    (finished("option refused: blksize='x' is not a number"), "refused"),
    (finished("client refused the options: error 8 'tsize'"), "probe"),
    (finished("client closed after the options: error 0 'closed'"), "probe"),
    (finished("client aborted: error 0 'bye'"), "aborted"),
    (finished("client sent DATA"), "aborted"),
    (finished("timeout after 5 retransmissions"), "stalled"),
    (finished("timeout waiting for the final ACK"), "stalled"),
    (finished("read error: short"), "failed"),
    (finished("aborted: server shutting down"), "failed"),
])
def test_outcome_in_one_word_for_metrics(record, kind):
    assert record.kind == kind


def test_refused_record_and_log_line():
    r = TransferRecord.refused(A, Request(codec.RRQ, "nope.bin", "octet"), "file not found")
    assert (r.client, r.port, r.size, r.bytes, r.ok) == ("10.0.0.5", 2000, None, 0, False)
    assert r.line() == ("TFTP 10.0.0.5:2000 'nope.bin' (octet): 0 bytes in 0.000 s (0.0 MB/s) "
                        "blksize=512 windowsize=1 [no options] retransmissions=0: file not found")


def test_session_record_has_what_a_sysadmin_needs():
    s = ReadSession(Request(codec.RRQ, "exact.bin", "octet", (("blksize", "1000"), ("tsize", "0"))),
                    3000, Policy())
    s.start(0.0)
    for block in range(5):
        s.on_ack(block, 0.1)
    r = s.record(A, 0.5, s.result)
    assert r == TransferRecord("10.0.0.5", 2000, "exact.bin", "octet", 3000, 3000, 0.5, 1000, 1,
                               (("blksize", "1000"), ("tsize", "3000")), 0, True, "ok")
    assert "3000 bytes in 0.500 s (0.0 MB/s) blksize=1000 windowsize=1 [blksize=1000 tsize=3000]" in r.line()
    assert s.record(A, 0.5, Finish(False, "connection lost")).outcome == "connection lost"
