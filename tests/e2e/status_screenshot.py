"""docs/status-page.png: the status page after a real morning in the boot lab (status_lab.py),
as headless chromium draws it. ``make ui-screenshot`` runs this; the picture is never edited by hand.
Holds /tmp/bootserverd-bench.lock while qemu runs (one benchmark or boot at a time)."""

from __future__ import annotations

import fcntl
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.e2e.build_image import tiny_image  # noqa: E402
from tests.e2e.status_lab import PAGE, make_lab, morning  # noqa: E402
from tests.support.browser import screenshot  # noqa: E402

OUT = REPO / "docs" / "status-page.png"


def main() -> None:
    tiny = tiny_image()
    with open("/tmp/bootserverd-bench.lock", "w") as lock, tempfile.TemporaryDirectory() as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with make_lab(Path(tmp), tiny) as lab:
            morning(lab)
            shot = Path(tmp) / "page.png"     # written inside the lab's namespace, as root
            screenshot(f"{PAGE}/", shot, size="1280,900", netns=lab.server)
            OUT.write_bytes(shot.read_bytes())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
