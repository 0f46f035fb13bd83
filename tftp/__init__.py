"""TFTP server. Pure (stdlib only): codec (wire format), session (one read transfer and its
record), admission (which requests start a transfer, the limits), netascii. protocol.py is the
Twisted adapter: sockets, timers, file reads; it may import bootserverd.ops (rate-limited logs)."""
