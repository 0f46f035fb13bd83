"""Twisted services, one per listener (tftp, nbd, dhcp, and http/ with its resources).
They import the protocol packages and bootserverd's sub-packages; never app, cli or ldapsync."""
