"""The HTTP service: downloads, diffs, boot files, device reports, status and metrics.
Imports bootserverd's sub-packages; never app, cli or ldapsync."""
