"""Integration tests share helper modules (tftp_support, nbd_support, netns, ...) by plain name."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
