"""How far a TCP connection's two byte streams went, as the kernel counts them (I/O).

A process that died leaves no record of what it read from or wrote to a socket it shared with
the fd store; the kernel's own counters tell it exactly: bytes taken from the socket are
``tcpi_bytes_received`` less what still waits to be read, bytes put into it are
``tcpi_bytes_acked`` plus what waits to be acknowledged or sent (Linux ≥ 4.1).
"""

from __future__ import annotations

import array
import fcntl
import socket
import struct
import termios

_ACKED_RECEIVED = struct.Struct("<QQ")
_AT = 120                       # offsetof(struct tcp_info, tcpi_bytes_acked); tcpi_bytes_received follows
_TRIES = 20


def _queued(sock: socket.socket, request: int) -> int:
    n = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), request, n)
    return n[0]


def _counters(sock: socket.socket) -> tuple[int, int]:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < _AT + _ACKED_RECEIVED.size:
        raise OSError("TCP_INFO without byte counters (kernel older than 4.1)")
    return _ACKED_RECEIVED.unpack_from(info, _AT)


def stream_positions(sock: socket.socket) -> tuple[int, int]:
    """(bytes the server's side has read, bytes it has written) since the connection began.
    Both are fixed while no process uses the socket; the counters and the queue sizes are read
    apart, so a read is taken again if a segment or an ACK arrived in between."""
    for _ in range(_TRIES):
        acked, received = _counters(sock)
        inq, outq = _queued(sock, termios.FIONREAD), _queued(sock, termios.TIOCOUTQ)
        if _counters(sock) == (acked, received):
            return received - inq, acked + outq
    raise OSError("the connection's counters did not hold still")
