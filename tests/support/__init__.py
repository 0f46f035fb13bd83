"""What the tests share (no test_*.py imports another): configs, daemons, images, namespaces, the DHCP lab and
world, the HTTP/NBD/TFTP/flood-and-fault helpers, the Debian root; run one as `python -m tests.support.X`."""
