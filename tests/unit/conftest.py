"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture
def site(tmp_path):
    """A directory a config can point at: images/, tftp/, state/ and an empty inventory."""
    for name in ("images", "tftp", "state"):
        (tmp_path / name).mkdir()
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    return tmp_path
