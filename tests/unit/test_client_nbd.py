"""The NBD root's reconnect helper, its pure parts with bytes (bootserverd_client.nbdwire,
nbdroot, nbdgenl): the handshake it does before handing a socket to the kernel, what it reads
from the kernel command line, its backoff, and the netlink messages it sends."""

from __future__ import annotations

import struct

import pytest

from bootserverd_client import nbdgenl, nbdroot, nbdwire

EXPORT = "e2edebian-2026-01-03-040506-amd64"
SIZE = 205541376


# -- handshake -----------------------------------------------------------------------------

def server_hello(flags: int = 3) -> bytes:
    return b"NBDMAGIC" + b"IHAVEOPT" + struct.pack(">H", flags)


def reply(kind: int, payload: bytes = b"", option: int = 7) -> bytes:
    return struct.pack(">QIII", 0x3E889045565A9, option, kind, len(payload)) + payload


def info_export(size: int = SIZE, flags: int = 0x0003) -> bytes:
    return reply(3, struct.pack(">HQH", 0, size, flags))


class Peer:
    """A server that says ``script`` and records what the client wrote."""

    def __init__(self, script: bytes):
        self.script, self.pos, self.written = script, 0, b""

    def recv_exact(self, n: int) -> bytes:
        if self.pos + n > len(self.script):
            raise OSError("the server closed the connection")
        data = self.script[self.pos:self.pos + n]
        self.pos += n
        return data

    def send(self, data: bytes) -> None:
        self.written += data


def negotiate(script: bytes, export: str = EXPORT) -> tuple[nbdwire.Export, Peer]:
    peer = Peer(script)
    return nbdwire.negotiate(peer.recv_exact, peer.send, export), peer


def test_go_on_the_export_gives_its_size_and_flags_and_the_client_wrote_flags_then_go():
    found, peer = negotiate(server_hello() + info_export() + reply(1))
    assert found == nbdwire.Export(SIZE, 0x0003)
    name = EXPORT.encode()
    assert peer.written == (struct.pack(">I", 3)                                    # fixed newstyle, no zeroes
                            + b"IHAVEOPT" + struct.pack(">II", 7, 4 + len(name) + 2)  # NBD_OPT_GO
                            + struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
    assert peer.pos == len(peer.script)


def test_no_zeroes_is_asked_for_only_when_offered():
    _, peer = negotiate(server_hello(flags=1) + info_export() + reply(1))
    assert peer.written[:4] == struct.pack(">I", 1)


def test_other_info_replies_are_skipped_and_the_export_info_kept():
    block_size = reply(3, struct.pack(">HIII", 3, 1, 4096, 32 << 20))
    found, _ = negotiate(server_hello() + block_size + info_export(size=4096, flags=1) + reply(3, struct.pack(">H", 1) + b"x")
                         + reply(1))
    assert found == nbdwire.Export(4096, 1)


@pytest.mark.parametrize("script, message", [
    (b"NBDMAGIX" + b"IHAVEOPT" + b"\0\3", "not an NBD server"),
    (b"NBDMAGIC" + struct.pack(">QQ", 0x00420281861253, 1 << 20)[:10], "oldstyle"),
    (server_hello(flags=0), "fixed newstyle"),
    (server_hello() + reply(1), "without NBD_INFO_EXPORT"),
    (server_hello() + reply(0x80000006, b"no such export"), "NBD_REP_ERR_UNKNOWN: no such export"),
    (server_hello() + reply(0x80000007), "NBD_REP_ERR_SHUTDOWN"),
    (server_hello() + reply(0x80000001), "NBD_REP_ERR_UNSUP"),
    (server_hello() + reply(3, struct.pack(">HQ", 0, SIZE)), "NBD_INFO_EXPORT of 10 bytes"),
    (server_hello() + reply(1, option=1), "not GO"),
    (server_hello() + struct.pack(">QIII", 0x1234, 7, 1, 0), "bad option reply magic"),
    (server_hello() + struct.pack(">QIII", 0x3E889045565A9, 7, 3, 1 << 20), "option reply of"),
    (server_hello() + reply(2, b"x" * 8), "unexpected reply type 2"),
])
def test_a_server_that_does_not_give_the_export_is_a_handshake_error(script, message):
    with pytest.raises(nbdwire.HandshakeError, match=message):
        negotiate(script)


def test_a_server_that_closes_mid_handshake_is_an_os_error():
    with pytest.raises(OSError):
        negotiate(server_hello() + info_export())


def test_endless_info_replies_end():
    with pytest.raises(nbdwire.HandshakeError, match="more than 64"):
        negotiate(server_hello() + info_export() * 70 + reply(1))


# -- what the initramfs attached -----------------------------------------------------------

BOOT = "BOOT_IMAGE=vmlinuz initrd=initrd.img root=/dev/nbd0 nbdroot=10.47.0.1:10809/{} ip=dhcp ro quiet"


def test_the_command_line_bootserverd_renders():
    t = nbdroot.target(BOOT.format(EXPORT))
    assert t == nbdroot.Target("10.47.0.1", 10809, EXPORT, 0, nbdroot.DEFAULT_DEAD_TIMEOUT, nbdroot.DEFAULT_TIMEOUT)
    assert t.device == "/dev/nbd0"


@pytest.mark.parametrize("nbdroot_arg, root, expected", [
    # as Debian's local-top/nbd splits them (nbd-client 3.24)
    ("10.0.0.1:10809/img", "/dev/nbd0", ("10.0.0.1", 10809, "img", 0)),
    ("10.0.0.1:/img", "/dev/nbd0", ("10.0.0.1", 10809, "/img", 0)),        # NFS-like: the slash stays
    ("10.0.0.1/img", "/dev/nbd1", ("10.0.0.1", 10809, "img", 1)),
    ("10.0.0.1:2000/a/b", "/dev/nbd0p1", ("10.0.0.1", 2000, "a/b", 0)),
    ("[fd00::1]:2000/img", "/dev/nbd0", ("fd00::1", 2000, "img", 0)),
    ("[fd00::1]:/img", "/dev/nbd0", ("fd00::1", 10809, "/img", 0)),
    ("10.0.0.1,img,nbd2", None, ("10.0.0.1", 10809, "img", 2)),
    ("10.0.0.1,img,nbd2", "/dev/nbd3", ("10.0.0.1", 10809, "img", 3)),     # root= wins
])
def test_nbdroot_forms(nbdroot_arg, root, expected):
    cmdline = f"nbdroot={nbdroot_arg} ip=dhcp" + (f" root={root}" if root else "")
    t = nbdroot.target(cmdline)
    assert (t.host, t.port, t.export, t.index) == expected


def test_server_and_path_from_dhcp_when_the_command_line_leaves_them_out():
    net = nbdroot.parse_net_conf("DEVICE='eth0'\nIPV4ADDR='10.47.0.120'\nROOTSERVER='10.47.0.1'\n"
                                 "ROOTPATH='10.47.0.9:10809/from-dhcp'\nfilename='lpxelinux.0'\n")
    assert net["ROOTSERVER"] == "10.47.0.1" and net["DEVICE"] == "eth0"
    t = nbdroot.target("root=/dev/nbd0 nbdroot=dhcp", net)
    assert (t.host, t.port, t.export) == ("10.47.0.9", 10809, "from-dhcp")
    t = nbdroot.target("root=/dev/nbd0 nbdroot=:10809/img", net)
    assert (t.host, t.port, t.export) == ("10.47.0.1", 10809, "img")


def test_settings_from_the_command_line():
    t = nbdroot.target(BOOT.format(EXPORT) + " bootserverd.nbd_dead_timeout=120 bootserverd.nbd_timeout=0")
    assert (t.dead_timeout, t.timeout) == (120, 0)
    with pytest.raises(ValueError, match="nbd_timeout"):
        nbdroot.target(BOOT.format(EXPORT) + " bootserverd.nbd_timeout=soon")


@pytest.mark.parametrize("cmdline", [
    "root=/dev/sda1 ro quiet",                                   # a disk boot
    BOOT.format(EXPORT) + " bootserverd.nbd_reconnect=0",       # switched off
    "root=/dev/nbd0 ip=dhcp",                                    # no server anywhere
    "nbdroot=10.0.0.1,10809 root=/dev/nbd0",                     # oldstyle: no export name
    "nbdroot=10.0.0.1:10809/img root=/dev/sda",                  # nbdroot without an NBD device
])
def test_nothing_to_keep(cmdline):
    with pytest.raises(nbdroot.NoNbdRoot):
        nbdroot.target(cmdline)


def test_backoff_doubles_to_two_seconds_with_jitter():
    middle = [nbdroot.retry_delay(n, 0.5) for n in range(6)]
    assert middle == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert nbdroot.retry_delay(0, 0.0) == pytest.approx(0.2)
    assert nbdroot.retry_delay(10**6, 0.999999) == pytest.approx(2.4, rel=1e-3)
    assert all(0.2 <= nbdroot.retry_delay(n, j) <= 2.4 + 1e-9 for n in range(40) for j in (0.0, 0.3, 1.0, 7.0, -1.0))


# -- netlink -------------------------------------------------------------------------------

def nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def test_reconfigure_with_timeouts_and_a_socket_is_the_kernels_layout():
    data = nbdgenl.encode(nbdgenl.reconfigure(0, dead_timeout=900, timeout=15, fd=5), family_id=30, seq=7, pid=99)
    attrs = (nla(1, struct.pack("=I", 0))                                          # NBD_ATTR_INDEX
             + nla(4, struct.pack("=Q", 15))                                       # NBD_ATTR_TIMEOUT
             + nla(8, struct.pack("=Q", 900))                                      # NBD_ATTR_DEAD_CONN_TIMEOUT
             + nla(7, nla(1, nla(1, struct.pack("=I", 5)))))                       # SOCKETS/SOCK_ITEM/SOCK_FD
    body = struct.pack("=BBH", 3, 1, 0) + attrs                                    # NBD_CMD_RECONFIGURE, v1
    assert data == struct.pack("=IHHII", 16 + len(body), 30, 0x5, 7, 99) + body    # REQUEST|ACK


def test_reconfigure_sends_only_what_is_given():
    data = nbdgenl.encode(nbdgenl.reconfigure(3, fd=9), family_id=30)
    assert data[20:] == nla(1, struct.pack("=I", 3)) + nla(7, nla(1, nla(1, struct.pack("=I", 9))))


def test_link_dead_names_its_device():
    body = struct.pack("=BBH", 4, 1, 0) + nla(1, struct.pack("=I", 2))
    msg = nbdgenl.decode(struct.pack("=IHHII", 16 + len(body), 30, 0, 0, 0) + body)
    assert nbdgenl.link_dead_index(msg) == 2
    other = struct.pack("=BBH", 5, 1, 0) + nla(1, struct.pack("=I", 2))            # NBD_CMD_STATUS
    assert nbdgenl.link_dead_index(nbdgenl.decode(struct.pack("=IHHII", 16 + len(other), 30, 0, 0, 0) + other)) is None
