"""Two boot servers in one config file (pair.*, dhcp.split): which server this is, and the
mistakes a sysadmin can make, each named with file, line and key."""

from ipaddress import IPv4Address as A
from pathlib import Path

import pytest

from bootserverd.config import settings as configmod

BASE = """\
server:
  address: 10.50.0.1
  state_dir: state
images:
  dir: images
tftp: {root: tftp}
inventory: {source: yaml, file: inventory.yaml}
"""
DHCP = """\
dhcp:
  enabled: true
  interfaces: [eth1]
  subnets:
    - network: 10.50.0.0/24
      pool: 10.50.0.100-10.50.0.199
"""


def load(site: Path, text: str):
    path = site / "bootserverd.yaml"
    path.write_text(BASE + text)
    return configmod.load(path)


def problems(site: Path, text: str) -> list[str]:
    with pytest.raises(configmod.ConfigError) as info:
        load(site, text)
    return [str(p).split(": ", 1)[1] for p in info.value.problems]


def test_this_server_found_among_the_machines_addresses(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: [A("127.0.0.1"), A("10.50.0.3")])
    config = load(site, DHCP + "  split: 60%\npair:\n  servers: [10.50.0.2, 10.50.0.3]\n")
    assert config.pair.this_server == A("10.50.0.3") and config.pair.peer == A("10.50.0.2")
    assert config.dhcp.split == 60.0


def test_explicit_this_server_needs_no_address_lookup(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: pytest.fail("looked up"))
    config = load(site, DHCP + "  split: 50\npair:\n  servers: [10.50.0.2, 10.50.0.3]\n"
                                "  this_server: 10.50.0.2\n")
    assert config.pair.peer == A("10.50.0.3")


def test_neither_address_local_is_a_config_error(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: [A("10.50.0.1")])
    found = problems(site, DHCP + "  split: 50\npair:\n  servers: [10.50.0.2, 10.50.0.3]\n")
    assert len(found) == 1 and found[0].startswith("pair.servers: neither 10.50.0.2 and 10.50.0.3")


def test_pair_mistakes_are_named(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: [A("10.50.0.2")])
    assert problems(site, DHCP + "pair:\n  servers: [10.50.0.2, 10.50.0.3]\n") == [
        "dhcp.split: is required when pair.servers is set and dhcp serves addresses (e.g. 50): "
        "two servers must not offer from one pool"]
    assert problems(site, DHCP + "  split: 50\n") == [
        "dhcp.split: needs pair.servers (the two servers that split the pools)"]
    found = problems(site, DHCP + "  split: 100\npair:\n  servers: [10.50.0.2, 10.50.0.2]\n"
                                  "  this_server: 10.50.0.9\n")
    assert any(p.startswith("dhcp.split: must be from 1 to 99") for p in found)
    assert any(p.startswith("pair.servers: must name two different addresses") for p in found)
    assert any(p.startswith("pair.this_server: 10.50.0.9 is not one of") for p in found)
    assert problems(site, "pair:\n  servers: [10.50.0.2, 10.50.0.3]\n  this_server: 10.50.0.2\n"
                          "  peer_url: ftp://x\n") == ["pair.peer_url: must be an http:// URL, not 'ftp://x'"]


def test_problems_carry_the_line(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: [])
    with pytest.raises(configmod.ConfigError) as info:
        load(site, "pair:\n  servers: [10.50.0.2, 10.50.0.3]\n")
    assert str(info.value.problems[0]).startswith(f"{site / 'bootserverd.yaml'}:9: pair.servers:")


def test_proxy_mode_pair_needs_no_split(site, monkeypatch):
    monkeypatch.setattr(configmod, "local_addresses", lambda: [A("10.50.0.2")])
    config = load(site, "dhcp: {enabled: true, mode: proxy, interfaces: [eth1]}\n"
                        "pair: {servers: [10.50.0.2, 10.50.0.3]}\n")
    assert config.dhcp.split is None and config.pair.this_server == A("10.50.0.2")
