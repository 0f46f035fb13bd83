"""Regression (fuzz_ldap): a snapshot file that is not UTF-8 raised UnicodeDecodeError out of
snapshot.read instead of SnapshotError (the caller only handles the latter). Fixed in
ldapsync/snapshot.py."""

import pytest

from ldapsync import snapshot


def test_damaged_snapshot_that_is_not_utf8(tmp_path):
    path = tmp_path / snapshot.FILENAME
    path.write_bytes(b'{"format": 1, "cookie": "\xff\xfe"}')
    with pytest.raises(snapshot.SnapshotError, match="not UTF-8"):
        snapshot.read(path)
