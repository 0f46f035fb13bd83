"""Images: the live store, the squashfs reader, the kernels' Secure Boot signatures (pure) and
the diff builder and cache. Imports model and ops; never app, services or ldapsync."""
