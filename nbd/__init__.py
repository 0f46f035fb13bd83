"""NBD server: read-only image exports (fixed newstyle handshake).

codec.py, handshake.py, transmission.py, admission.py (connection limits) and exports.py
(the export types and the catalog over the image store), handover.py and inflight.py (what a
restarted or crashed process leaves for the next) are pure: stdlib only, no I/O; protocol.py
is the Twisted adapter that owns sockets and file descriptors, keeper.py keeps a kept
connection's in-flight log current, tcpstate.py reads the kernel's
stream counters of a kept connection, sendpool.py sends from threads what is not in memory
(pagecache.py tells). Imports: nothing
of the application but bootserverd.ops (the shared rate-limited log rule).
"""
