"""NBD server: read-only image exports (fixed newstyle handshake).

codec.py, handshake.py and transmission.py are pure (stdlib only, no I/O);
protocol.py is the Twisted adapter that owns sockets and file descriptors.
"""
