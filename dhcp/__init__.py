"""DHCP server: codec and policy are pure (stdlib only); protocol.py is the Twisted adapter."""
