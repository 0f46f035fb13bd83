"""NBD server: read-only image exports (fixed newstyle handshake).

codec.py, handshake.py, transmission.py, admission.py (connection limits) and exports.py
(the export types and the catalog over the image store) are pure: stdlib only, no I/O;
protocol.py is the Twisted adapter that owns sockets and file descriptors. Imports: nothing
of the application but bootserverd.ops (the shared rate-limited log rule).
"""
