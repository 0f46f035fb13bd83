"""TFTP server: pure codec and session machine, Twisted adapter in protocol.py."""
