"""Network namespace helpers for tests: create/delete namespaces and veth pairs, run commands
inside. Names carry the test PID and a counter so parallel test runs never collide; every
namespace is deleted by `Netns.delete()` (use the `netns_pair` context manager or a fixture).
Addresses are only ever configured inside the namespaces this module creates."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess

_counter = itertools.count()


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"[:15]


class Netns:
    def __init__(self, prefix: str = "bsd"):
        self.name = unique(prefix)
        _ip("netns", "add", self.name)
        self.ip("link", "set", "lo", "up")

    def ip(self, *args: str) -> None:
        _ip("-n", self.name, *args)

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(argv), timeout=timeout, **kw)

    def popen(self, argv: list[str], **kw) -> subprocess.Popen:
        # `ip netns exec` execs the command, so the Popen PID is the command's own PID.
        return subprocess.Popen(self.cmd(argv), **kw)

    def delete(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=10)


def veth(a: Netns, a_if: str, b: Netns, b_if: str, a_mac: str | None = None,
         b_mac: str | None = None) -> None:
    """A veth pair with one end in each namespace, both up."""
    tmp_a, tmp_b = unique("va"), unique("vb")
    _ip("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
    _ip("link", "set", tmp_a, "netns", a.name)
    _ip("link", "set", tmp_b, "netns", b.name)
    a.ip("link", "set", tmp_a, "name", a_if)
    b.ip("link", "set", tmp_b, "name", b_if)
    if a_mac:
        a.ip("link", "set", a_if, "address", a_mac)
    if b_mac:
        b.ip("link", "set", b_if, "address", b_mac)
    a.ip("link", "set", a_if, "up")
    b.ip("link", "set", b_if, "up")


def bridge(switch: Netns, ports: list[tuple[Netns, str, str]]) -> None:
    """A bridge br0 in ``switch`` joining each (namespace, its interface, switch's port) by a veth."""
    switch.ip("link", "add", "br0", "type", "bridge")
    switch.ip("link", "set", "br0", "up")
    for ns, inner, outer in ports:
        veth(ns, inner, switch, outer)
        switch.ip("link", "set", outer, "master", "br0")


@contextlib.contextmanager
def namespaces(*prefixes: str):
    """Yield fresh namespaces; always delete them (and so their veths) afterwards."""
    made: list[Netns] = []
    try:
        for prefix in prefixes:
            made.append(Netns(prefix))
        yield made
    finally:
        for ns in made:
            ns.delete()
