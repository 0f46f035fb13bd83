"""Suite-wide settings."""

import os

# The suite runs as root (namespaces, ports below 1024); the daemon refuses root unless told.
os.environ.setdefault("BOOTSERVERD_ALLOW_ROOT", "1")
