"""ldapsync.syncstate (RFC 4533 bookkeeping + batching) and ldapsync.snapshot (atomic pair)."""
import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from ldapsync import snapshot
from ldapsync.syncstate import Delete, Put, SyncState

A = {"cn": ("a",)}


def ops(batch):
    return [(type(op).__name__, op.uuid) for op in batch.ops]


def test_refresh_then_persist_batches_in_order_and_tracks_entries():
    s = SyncState(batch_max=3, batch_delay=0.05, refresh_delay=0.05)
    s.entry("u1", "cn=1", A, now=0.0)
    s.present(["u1"])
    assert not s.due(0.01, idle=False)
    assert s.due(0.06, idle=False)                     # the oldest change is batch_delay old
    s.entry("u2", "cn=2", A, now=0.06)
    s.entry("u3", "cn=3", A, now=0.06)
    assert s.due(0.06, idle=False)                     # batch_max reached
    b = s.take()
    assert ops(b) == [("Put", "u1"), ("Put", "u2"), ("Put", "u3")] and not b.refresh_done
    s.set_cookie("c1", now=0.07)
    s.refresh_done(now=0.07)
    b = s.take()
    assert b.refresh_done and b.cookie == "c1" and b.ops == () and b.entries == 3
    assert s.take() is None
    s.entry("u2", "cn=2", {"cn": ("b",)}, now=1.0)
    s.delete(["u1", "unknown"], now=1.0)
    assert s.due(1.0, idle=True)                       # idle connection: hand over at once
    assert ops(s.take()) == [("Put", "u2"), ("Delete", "u1")]
    assert set(s.entries) == {"u2", "u3"}


def test_a_pause_during_the_refresh_is_not_its_end():
    s = SyncState(batch_delay=0.05, refresh_delay=0.2)
    s.entry("u1", "cn=1", A, now=0.0)
    assert not s.due(0.1, idle=True)
    assert s.due(0.2, idle=True)


def test_present_phase_deletes_what_was_not_named():
    s = SyncState(entries={"u1": ("cn=1", A), "u2": ("cn=2", A), "u3": ("cn=3", A)}, cookie="old")
    s.begin()
    s.entry("u2", "cn=2", {"cn": ("new",)}, now=0)   # changed
    s.present(["u2"])
    s.present(["u3"])                                # unchanged
    s.present_end(refresh_deletes=False, now=0)
    s.refresh_done(now=0)
    assert ops(s.take()) == [("Put", "u2"), ("Delete", "u1")]
    assert set(s.entries) == {"u2", "u3"}


def test_delete_phase_keeps_what_was_not_named():
    s = SyncState(entries={"u1": ("cn=1", A), "u2": ("cn=2", A)}, cookie="old")
    s.begin()
    s.delete(["u1"], now=0)
    s.present_end(refresh_deletes=True, now=0)
    s.refresh_done(now=0)
    assert ops(s.take()) == [("Delete", "u1")]
    assert set(s.entries) == {"u2"}


def test_full_refresh_without_cookie_drops_entries_the_replica_no_longer_has():
    s = SyncState(entries={"gone": ("cn=g", A), "kept": ("cn=k", A)}, cookie=None)
    s.entry("kept", "cn=k", A, now=0)
    s.entry("new", "cn=n", A, now=0)
    s.present_end(refresh_deletes=True, now=0)     # slapd may end a full refresh this way
    s.refresh_done(now=0)
    assert ops(s.take()) == [("Put", "kept"), ("Put", "new"), ("Delete", "gone")]


def test_refused_cookie_makes_the_next_search_full():
    s = SyncState(entries={"gone": ("cn=g", A)}, cookie="c")
    s.drop_cookie()
    s.begin()
    s.refresh_done(now=0)
    assert ops(s.take()) == [("Delete", "gone")]


def test_a_new_cookie_alone_is_a_batch_so_it_gets_saved():
    s = SyncState(cookie="c1")
    s.refresh_done(now=0)
    s.take()
    s.set_cookie("c1", now=0)
    assert not s.pending()
    s.set_cookie("c2", now=0)
    assert s.due(0, idle=True) and s.take().cookie == "c2"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "del"]), st.integers(0, 5), st.integers(0, 3)), max_size=40),
       st.integers(1, 7))
def test_batches_replayed_in_order_give_the_same_entries(events, batch_max):
    s = SyncState(batch_max=batch_max, batch_delay=10)
    replica: dict = {}
    batches = []
    for i, (kind, uuid, value) in enumerate(events):
        if kind == "put":
            s.entry(str(uuid), f"cn={uuid}", {"v": (str(value),)}, now=i)
        else:
            s.delete([str(uuid)], now=i)
        if s.due(i, idle=False):
            batches.append(s.take())
    batches.append(s.take())
    for batch in filter(None, batches):
        for op in batch.ops:
            if isinstance(op, Put):
                replica[op.uuid] = (op.dn, op.attrs)
            else:
                assert isinstance(op, Delete)
                replica.pop(op.uuid)
    assert replica == s.entries


def test_snapshot_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / snapshot.FILENAME
    assert snapshot.read(path) is None
    snap = snapshot.Snapshot(source={"uri": "ldapi:///", "base": "dc=x"}, cookie="rid=000,csn=1",
                             entries={"u1": ("cn=ä,dc=x", {"cn": ("ä",), "macaddress": ("52:54:00:00:00:01",)})},
                             saved_at=12.5)
    snapshot.write(path, snap)
    assert snapshot.read(path) == snap
    assert os.listdir(tmp_path) == [snapshot.FILENAME]     # no temp file left behind
    snapshot.write(path, snapshot.Snapshot(source={}, cookie=None))
    assert snapshot.read(path).entries == {}


@pytest.mark.parametrize("text", ["{", '{"format": 99}', '{"format": 1, "entries": 3}'])
def test_damaged_snapshot_is_an_error_not_a_traceback(tmp_path, text):
    path = tmp_path / "s.json"
    path.write_text(text)
    with pytest.raises(snapshot.SnapshotError):
        snapshot.read(path)


def test_snapshot_file_is_plain_json(tmp_path):
    path = tmp_path / "s.json"
    snapshot.write(path, snapshot.Snapshot(source={"base": "dc=x"}, cookie="c", entries={}))
    assert json.loads(path.read_text())["cookie"] == "c"


# -- regression (fuzz_ldap): a snapshot file that is not UTF-8 raised UnicodeDecodeError out of
# snapshot.read instead of SnapshotError (the caller only handles the latter). Fixed in
# ldapsync/snapshot.py.

def test_damaged_snapshot_that_is_not_utf8(tmp_path):
    path = tmp_path / snapshot.FILENAME
    path.write_bytes(b'{"format": 1, "cookie": "\xff\xfe"}')
    with pytest.raises(snapshot.SnapshotError, match="not UTF-8"):
        snapshot.read(path)
