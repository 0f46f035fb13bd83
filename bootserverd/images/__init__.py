"""Images: the live store, the squashfs reader (files; ``squashfs_layout``: where their blocks
sit), the kernels' Secure Boot signatures (pure), the diff builder and cache, and prewarm
(``prewarm`` plans, pure; ``residency`` page cache I/O; ``prewarmer`` runs it). Imports model,
ops and nbd.trace (the recorded boots); never app, services or ldapsync."""
