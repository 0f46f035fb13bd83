"""Comparing our images with the peer's /images/ listing (bootserverd.images.peer): what is
missing, what differs, and which log lines a change gives (none for a poll that finds the same)."""

import pytest

from bootserverd.images.peer import ListingError, changes, compare, parse_listing

SHA = {c: c * 64 for c in "abcdef"}


def test_parse_listing_takes_name_size_sha256():
    doc = {"images": [{"name": "x", "size": 10, "sha256": SHA["a"], "url": "/images/x.img"}]}
    assert parse_listing(doc) == {"x": (10, SHA["a"])}
    for bad in ([], {"images": "x"}, {"images": [{"name": "x"}]}):
        with pytest.raises(ListingError):
            parse_listing(bad)


def test_compare_missing_differing_only_on_peer():
    ours = {"same": (1, SHA["a"]), "gone": (2, SHA["b"]), "size": (3, SHA["c"]), "bytes": (4, SHA["d"])}
    theirs = {"same": (1, SHA["a"]), "size": (30, SHA["c"]), "bytes": (4, SHA["e"]), "new": (5, SHA["f"])}
    c = compare(ours, theirs)
    assert (c.missing, c.differing, c.only_on_peer, c.equal) == (
        ("gone",), ("bytes", "size"), ("new",), frozenset({"same"}))
    assert c.details == {"size": "30 bytes there, 3 here",
                         "bytes": f"sha256 {'e' * 12}… there, {'d' * 12}… here"}
    assert c.as_dict() == {"missing": ["gone"], "differing": ["bytes", "size"],
                           "only_on_peer": ["new"], "same": 1}


def test_changes_name_each_image_once_then_only_what_changed():
    ours = {"a": (1, SHA["a"]), "b": (2, SHA["b"])}
    first = compare(ours, {"a": (1, SHA["c"])})
    assert changes(None, first) == [
        ("warn", "image b is missing on the peer"),
        ("warn", f"image a differs on the peer (sha256 {'c' * 12}… there, {'a' * 12}… here)")]
    assert changes(first, compare(ours, {"a": (1, SHA["c"])})) == []        # the next poll: quiet
    fixed = compare(ours, {"a": (1, SHA["a"]), "b": (2, SHA["b"])})
    assert changes(first, fixed) == [("info", "image a is now the same on the peer"),
                                     ("info", "image b is now the same on the peer")]
    assert changes(None, fixed) == []
    retired = compare({"a": (1, SHA["a"])}, {"a": (1, SHA["a"])})
    assert changes(compare(ours, {"a": (1, SHA["a"])}), retired) == [
        ("info", "image b is now on neither server")]
