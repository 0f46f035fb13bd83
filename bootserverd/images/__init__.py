"""Images: the live store, the squashfs reader and the diff builder and cache.
Imports model and ops; never app, services or ldapsync."""
