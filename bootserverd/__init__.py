"""bootserverd: one process that boots a school's machines (DHCP, TFTP, NBD, HTTP)."""

__version__ = "0.1.0"
