"""Regression (fuzz_http): an IPv6 HTTP client asking for grub.cfg-<HEX> made _hex_ip raise
(a 500 with a traceback). Fixed in bootserverd/bootfiles.py: such a client matches no prefix."""

from ipaddress import IPv4Address

from bootserverd.boot.files import BootFileError, BootFiles, _hex_ip
from bootserverd.config.settings import Config, ServerConfig
from bootserverd.model.objects import Defaults, Device
from bootserverd.model.objects import InventoryRecords
from bootserverd.model.snapshot import Inventory, Model
from bootserverd.boot.resolver import BootResolver

import pytest


def test_hex_ip_of_ipv4_and_ipv6():
    assert _hex_ip("10.0.0.57") == "0A000039"
    assert _hex_ip("::1") == "" and _hex_ip("::ffff:10.0.0.57") == "" and _hex_ip("?") == ""


def test_ipv6_client_asking_for_a_hex_grub_config_gets_a_config(tmp_path):
    directory = InventoryRecords((Device("52:54:00:00:00:01", ip="10.0.0.57"),), {}, Defaults())
    model = Model(Inventory(directory, {}, None))
    config = Config(server=ServerConfig(address=IPv4Address("10.0.0.1"), state_dir=tmp_path))
    files = BootFiles(tmp_path, BootResolver(config, model), model)
    assert files.open("grub.cfg-0A", "::1").read(0, 100)        # the generic (unknown) config
    with pytest.raises(BootFileError):
        files.open("pxelinux.cfg/zz", "::1")
