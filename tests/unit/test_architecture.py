"""The house rules, read from the code's own imports (every import, function-local ones too).

- The declared pure modules import with twisted and sockets blocked: codecs, machines, the
  model and the decisions beside them cannot do I/O behind our back (the sans-I/O rule).
- Every module of a protocol package is declared pure or I/O, so a new one is classified.
- Dependencies point one way: app and cli on top; services and ldapsync below them; bootserverd's
  sub-packages below those; the protocol packages and the model at the bottom. The client side
  (bootserverd_client, which runs on laptops) imports nothing of the server.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("bootserverd", "bootserverd_client", "services", "ldapsync", "dhcp", "tftp", "nbd")

PURE = (
    "dhcp.codec", "dhcp.options", "dhcp.machine", "dhcp.leases", "dhcp.sniff", "dhcp.rogue",
    "dhcp.split",
    "tftp.codec", "tftp.session", "tftp.admission", "tftp.netascii",
    "nbd.codec", "nbd.handshake", "nbd.transmission", "nbd.admission", "nbd.exports", "nbd.handover",
    "nbd.inflight",
    "nbd.trace",
    "bootserverd.model.objects", "bootserverd.model.snapshot", "bootserverd.model.rollout",
    "bootserverd.model.validate",
    "bootserverd.boot.report", "bootserverd.boot.stages", "bootserverd.images.signature",
    "bootserverd.images.peer", "bootserverd.images.prewarm", "bootserverd.images.squashfs_layout",
    "bootserverd.ops.ratelimit", "bootserverd.ops.clients", "bootserverd.ops.transfers",
    "ldapsync.mapping", "ldapsync.syncstate", "ldapsync.replication", "ldapsync.syncrepl_conf",
    "services.http.range", "services.http.bucket",
    "services.http.ui.access", "services.http.ui.view", "services.http.ui.html", "services.http.ui.svg",
)
# Modules of the protocol packages that do I/O: the Twisted adapters and their helpers.
PROTOCOL_IO = {"dhcp.protocol", "dhcp.netif", "dhcp.icmp", "dhcp.journal", "dhcp.watch", "tftp.protocol", "tftp.transfer",
               "nbd.protocol", "nbd.listener", "nbd.sender", "nbd.sendpool", "nbd.pagecache", "nbd.tcpstate", "nbd.tracefile", "nbd.keeper"}

BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('twisted', 'socket', '_socket', 'select', 'selectors', 'asyncio', 'ldap'):
            raise ImportError('pure layer imported ' + name)
sys.meta_path.insert(0, Block())
import importlib
for module in sys.argv[1:]:
    importlib.import_module(module)
"""


def modules():
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


MODULES = dict(modules())


def imports_of(name: str) -> set[str]:
    """Every project module ``name`` imports, at any depth of its code."""
    tree = ast.parse(MODULES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in found if m in MODULES and m.split(".")[0] in PACKAGES}


def declared_pure_exist():
    return [m for m in PURE if m in MODULES]


def test_every_declared_pure_module_exists():
    # a name in PURE that no longer exists is a stale declaration
    missing = [m for m in PURE if m not in MODULES]
    assert not missing, f"PURE names modules that do not exist: {missing}"


def test_every_protocol_module_is_declared():
    undeclared = [m for m in MODULES if m.split(".")[0] in ("dhcp", "tftp", "nbd")
                  and "." in m and m not in PURE and m not in PROTOCOL_IO]
    assert not undeclared, f"declare these pure or I/O in {__file__}: {undeclared}"


def test_pure_modules_import_without_twisted_sockets_or_ldap():
    proc = subprocess.run([sys.executable, "-c", BLOCKER, *declared_pure_exist()], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]


def layer(module: str) -> str:
    if module in ("bootserverd.app", "bootserverd.cli", "bootserverd.__main__"):
        return "top"
    if module.startswith("bootserverd.model"):
        return "model"
    if module.startswith("bootserverd.ops"):
        return "ops"
    return module.split(".")[0]


# layer → the layers it may import (besides itself)
ALLOWED = {
    "top": {"bootserverd", "services", "ldapsync", "dhcp", "tftp", "nbd", "model", "ops", "bootserverd_client"},
    "services": {"bootserverd", "dhcp", "tftp", "nbd", "model", "ops", "bootserverd_client"},
    "ldapsync": {"bootserverd", "model", "ops", "bootserverd_client"},
    "bootserverd": {"dhcp", "tftp", "nbd", "model", "ops", "bootserverd_client"},
    # the protocol packages: their adapters may use the shared operations helpers
    "dhcp": {"model", "ops", "bootserverd_client"},
    "tftp": {"ops"},
    "nbd": {"ops"},
    "ops": set(),
    "model": set(),
    "bootserverd_client": set(),
}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_one_way(module):
    here = layer(module)
    wrong = sorted(m for m in imports_of(module) if layer(m) != here and layer(m) not in ALLOWED[here])
    assert not wrong, f"{module} ({here}) must not import {wrong}"


def test_only_the_cli_imports_the_app():
    importers = sorted(m for m in MODULES if "bootserverd.app" in imports_of(m) and m != "bootserverd.cli")
    assert not importers, importers


def test_no_import_cycles_between_modules():
    graph = {m: imports_of(m) - {m} for m in MODULES}
    done, path, cycles = set(), [], []

    def visit(m):
        if m in path:
            cycles.append(path[path.index(m):] + [m])
            return
        if m in done:
            return
        path.append(m)
        for n in sorted(graph[m]):
            if n in graph and not n.startswith(m + ".") and not m.startswith(n + "."):
                visit(n)
        path.pop()
        done.add(m)

    for m in sorted(graph):
        visit(m)
    assert not cycles, cycles[:5]


def test_no_test_module_imports_another():
    """Shared test code lives in support modules (tests/support; the fuzz tool's own in tests/fuzz),
    never in a test_*.py that another file imports (pytest would collect its tests twice)."""
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            # tests.x.test_y, or test_y by plain name (a directory put on sys.path)
            if any(n.split(".")[-1].startswith("test_") and (n.startswith("tests.") or n.startswith("test_"))
                   for n in names):
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
