"""Write a bootserverd config + inventory into a temp dir for tests."""

from __future__ import annotations

import socket
from pathlib import Path

import yaml


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp: Path, inventory: dict | None = None, **sections) -> Path:
    """A loopback config on free ports; ``sections`` override or add top-level keys."""
    for name in ("images", "tftp", "state", "etc"):
        (tmp / name).mkdir(exist_ok=True)
    (tmp / "etc" / "inventory.yaml").write_text(yaml.safe_dump(inventory or {"devices": []}))
    config = {
        "server": {"address": "127.0.0.1", "state_dir": "../state"},
        "images": {"dir": "../images", "settle_seconds": 0, "rescan_interval": 30},
        "tftp": {"enabled": False, "listen": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}", "root": "../tftp"},
        "nbd": {"enabled": False, "listen": f"127.0.0.1:{free_port()}"},
        "http": {"enabled": False, "listen": f"127.0.0.1:{free_port()}"},
        "dhcp": {"enabled": False},
        "inventory": {"source": "yaml", "file": "inventory.yaml"},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    path = tmp / "etc" / "bootserverd.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
