"""Path traversal corpus against the real server: nothing outside tftp.root is ever sent."""
import os

import pytest

from tests.support.tftp import RawClient, Server
from tftp import codec
from tftp.codec import Data, Error

SECRET = b"TOP-SECRET-" + os.urandom(8).hex().encode()

DENY = {codec.E_ACCESS}                       # a '..', NUL, overlong or escaping name
GONE = {codec.E_NOT_FOUND, codec.E_ACCESS}    # a literal odd name: not found is fine too
BAD = {codec.E_ILLEGAL, codec.E_ACCESS, codec.E_NOT_FOUND}   # wire-level oddities

CORPUS = [
    ("../secret", DENY), ("../../secret", DENY), ("../../../../../../etc/passwd", DENY),
    ("/../secret", DENY), ("//../secret", DENY), ("./../secret", DENY), ("sub/../../secret", DENY),
    ("sub/./../../secret", DENY), ("sub//..//..//secret", DENY), ("..", DENY), ("../", DENY),
    ("..\\secret", DENY), ("\\..\\secret", DENY), ("sub\\..\\..\\secret", DENY),
    ("C:\\..\\secret", DENY), ("..\\/secret", DENY), ("pxelinux.cfg/../../secret", DENY),
    ("sub/../sub/../../secret", DENY), ("../root/../secret", DENY), ("/./../secret", DENY),
    ("../" * 40 + "etc/passwd", DENY), ("a/b/c/d/../../../../../secret", DENY),
    ("sub/..", DENY), ("./..", DENY), ("../.", DENY), (".\\..\\secret", DENY),
    ("escape", DENY), ("escdir/secret", DENY), ("sub/escape2", DENY), ("loop", GONE),
    ("x" * 600, DENY), ("sub/" * 200 + "f", DENY), ("../" * 200 + "secret", DENY),
    ("..\udcff/secret", GONE), ("\udcc0\udcae\udcc0\udcae/secret", GONE),   # overlong UTF-8 '.'
    ("/etc/passwd", GONE), ("/secret", GONE), ("etc/passwd", GONE), ("~/secret", GONE),
    ("~root/.bashrc", GONE), ("%2e%2e/secret", GONE), ("..%2fsecret", GONE),
    ("%2e%2e%2fsecret", GONE), ("%252e%252e/secret", GONE), ("\u2025/secret", GONE),
    ("\uff0e\uff0e/secret", GONE), ("....//secret", GONE), ("...", GONE), (".../secret", GONE),
    ("..;/secret", GONE), ("..%00/secret", GONE), ("/proc/self/environ", GONE),
    ("file:///etc/passwd", GONE), ("sub/.../secret", GONE),
]
# NUL inside the name ends the filename field on the wire: whatever follows is the mode.
RAW = [b"..\x00octet\x00", b"sub\x00../secret\x00octet\x00", b"\x00../secret\x00octet\x00",
       b"../secret\x00\x00", b"f\x00..\x00"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("trav")
    root, outside = base / "root", base / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (base / "secret").write_bytes(SECRET)
    (outside / "secret").write_bytes(SECRET)
    (root / "sub" / "f").write_bytes(b"inside")
    os.symlink(base / "secret", root / "escape")
    os.symlink(outside, root / "escdir")
    os.symlink("../../secret", root / "sub" / "escape2")
    os.symlink("loop", root / "loop")
    os.symlink("sub/f", root / "inside-link")
    s = Server(root)
    yield s
    s.stop()


def ask(server, raw: bytes):
    c = RawClient(server.port)
    try:
        c.send(raw)
        p, addr = c.recv(2.0)
        if isinstance(p, Data):
            c.send(b"\x00\x05\x00\x00stop\x00", addr)
        return p
    finally:
        c.close()


def test_corpus_is_large_enough():
    assert len(CORPUS) + len(RAW) >= 50


@pytest.mark.parametrize("name,codes", CORPUS, ids=range(len(CORPUS)))
def test_traversal_refused(server, name, codes):
    p = ask(server, b"\x00\x01" + name.encode("utf-8", "surrogateescape") + b"\x00octet\x00")
    assert isinstance(p, Error), f"{name!r} got {p!r}"
    assert p.code in codes, f"{name!r}: error {p.code} {p.message}"


@pytest.mark.parametrize("raw", RAW, ids=range(len(RAW)))
def test_nul_tricks_refused(server, raw):
    p = ask(server, b"\x00\x01" + raw)
    assert isinstance(p, Error) and p.code in BAD, p


def test_inside_symlink_and_control_are_served(server):
    for name in ("inside-link", "sub/f", "/sub/f", "sub\\f", "./sub/f"):
        p = ask(server, b"\x00\x01" + name.encode() + b"\x00octet\x00")
        assert p == Data(1, b"inside"), name
