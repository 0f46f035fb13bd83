"""Regressions found by fuzz_config: `.nan` passed every min/max rule (NaN compares false),
so a timeout or interval of NaN reached the reactor's timers (fixed in bootserverd/schema.py);
a config file holding a bare number raised TypeError out of load() (bootserverd/config.py)."""

import pytest

from bootserverd.config import settings as configmod


def test_nan_is_refused_with_the_key_named(tmp_path):
    for name in ("images", "state"):
        (tmp_path / name).mkdir()
    (tmp_path / "inventory.yaml").write_text("devices: []\n")
    path = tmp_path / "bootserverd.yaml"
    path.write_text("server: {address: 127.0.0.1, state_dir: state}\n"
                    "images: {dir: images, rescan_interval: .nan}\n"
                    "tftp: {enabled: false, timeout: .NaN}\n"
                    "inventory: {source: yaml, file: inventory.yaml}\n")
    with pytest.raises(configmod.ConfigError) as info:
        configmod.load(path)
    text = str(info.value)
    assert "images.rescan_interval: must be a number, not .nan" in text
    assert "tftp.timeout: must be a number, not .nan" in text


def test_a_bare_number_is_a_config_error(tmp_path):
    path = tmp_path / "bootserverd.yaml"
    path.write_text("7\n")
    with pytest.raises(configmod.ConfigError, match="must be a mapping, not int"):
        configmod.load(path)
