"""nbd.handover and the parser's pending bytes: what a restarted daemon is told about a
connection it did not open, as bytes."""

import pytest

from nbd import codec as c
from nbd.handover import (BadState, Handover, KeptFiles, SessionState, decode, file_group, group_name,
                          is_connection_group, is_file_group)
from nbd.transmission import RequestParser


def request(cmd, handle, offset=0, length=4096):
    return c.REQUEST.pack(c.REQUEST_MAGIC, 0, cmd, handle, offset, length)


def test_session_state_and_handover_round_trip():
    state = SessionState("demo-2026-01-01-000000-amd64", 1 << 30, True, {1: "base:allocation"},
                         ("GO", "STRUCTURED_REPLY"), "10.0.0.5:40000", "demo 2026 amd64", "65024-2213243")
    assert decode(state.encode()) == state
    older = state.encode().replace(b', "file": "65024-2213243"', b"")    # stored before files were kept apart
    assert decode(older).file == ""
    handover = Handover(b"\x25\x60\x95", 7)
    assert decode(handover.encode()) == handover


@pytest.mark.parametrize("data", [b"", b"{}", b"not json", b'{"kind": "other"}',
                                  b'{"kind": "nbd-session", "export": "x"}', b"[1, 2]"])
def test_anything_else_is_refused_not_trusted(data):
    with pytest.raises(BadState):
        decode(data)


def test_a_request_read_in_part_is_parsed_on_by_the_next_parser():
    first = RequestParser()
    stream = request(c.CMD_READ, 1) + request(c.CMD_READ, 2, 4096)
    assert [r[2] for r in first.feed(stream[:40])] == [1]       # 12 bytes of the second one held
    buffered, skip = first.pending()
    assert (len(buffered), skip) == (12, 0)
    second = RequestParser()
    second.resume(buffered, skip)
    assert [(r[2], r[3]) for r in second.feed(stream[40:])] == [(2, 4096)]


def test_a_write_payload_being_discarded_goes_on_being_discarded():
    first = RequestParser()
    first.feed(request(c.CMD_WRITE, 1, length=100) + b"x" * 30)
    second = RequestParser()
    second.resume(*first.pending())
    assert [r[2] for r in second.feed(b"x" * 70 + request(c.CMD_READ, 2))] == [2]


def test_group_names_are_unique_per_process_and_valid_fdnames():
    names = {group_name(serial, pid) for serial in range(3) for pid in (100, 101)}
    assert len(names) == 6 and all(is_connection_group(n) and ":" not in n for n in names)
    assert not is_connection_group("nbd-listen")


def test_an_image_file_is_kept_with_its_first_reader_and_removed_after_its_last():
    """A classroom reads one file: it is stored once (a store without kcmp() would drop the other
    opens of it), and leaves the store when its last kept connection ends."""
    files = KeptFiles()
    assert [files.hold("1-7") for _ in range(3)] == [True, False, False]
    assert files.hold("1-8") is True
    assert [files.release("1-7") for _ in range(3)] == [False, False, True]
    assert files.prune() == []                        # 1-8 still has its reader
    assert is_file_group(file_group("1-8")) and not is_file_group("nbd-conn-1-1")
    assert ":" not in file_group("65024-2213243")     # a valid FDNAME


def test_after_an_adoption_files_nobody_reads_are_pruned():
    files = KeptFiles()
    for file in ("1-7", "1-8"):
        files.inherited(file)                         # in the store already: not stored again
    assert files.hold("1-7") is False
    assert files.prune() == ["1-8"]
    assert files.prune() == [] and files.hold("1-8") is True     # gone: stored again by its next reader
