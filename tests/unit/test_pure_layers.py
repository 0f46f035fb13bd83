"""The sans-I/O rule: every protocol module but the Twisted adapter imports with twisted
(and sockets) blocked, so codecs and state machines cannot do I/O behind our back."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADAPTERS = {"protocol", "netif"}   # the I/O side: Twisted adapters, netlink
PURE = sorted(f"{pkg}.{path.stem}" for pkg in ("dhcp", "tftp", "nbd")
              for path in (REPO / pkg).glob("*.py") if path.stem not in ADAPTERS | {"__init__"})

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('twisted', 'socket', '_socket', 'select', 'selectors', 'asyncio'):
            raise ImportError('pure layer imported ' + name)
sys.meta_path.insert(0, Block())
import importlib
importlib.import_module(sys.argv[1])
"""


def test_every_protocol_package_has_pure_modules():
    for pkg in ("dhcp", "tftp", "nbd"):
        assert any(name.startswith(pkg + ".codec") for name in PURE), pkg


@pytest.mark.parametrize("module", PURE)
def test_pure_module_imports_without_twisted_or_sockets(module):
    proc = subprocess.run([sys.executable, "-c", BLOCKER, module], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
