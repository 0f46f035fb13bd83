"""bootserverd-client: what the machines that boot from bootserverd run (the laptop image
updater, the NBD root's reconnect helper). Standard library only, but for pyroute2 (the
helper's netlink); imports nothing of the server."""
