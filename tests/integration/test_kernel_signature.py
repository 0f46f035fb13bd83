"""An image whose kernel has no Secure Boot signature is flagged when it is published, through
the shipped daemon: two real squashfs images, one with Debian's signed kernel, one with the same
kernel after ``sbattach --remove``. The unsigned one gets one warning line naming the devices
that would boot it, and both show in /status, /metrics and the status page's images page."""

import json
import re
import subprocess

import yaml

from tests.support.config import write_config
from tests.support.daemon import Daemon
from tests.support.images import build_image
from tests.support.kernels import debian_signed_kernel, without_signature

SIGNED_IMAGE = "bookworm-2026-12-01-080000-amd64"
UNSIGNED_IMAGE = "custom-2026-12-01-080000-amd64"
AT_RISK = [f"class-pc{i:02d}" for i in range(1, 13)]       # 12 devices assigned the unsigned image


def get(url: str) -> str:
    done = subprocess.run(["curl", "-sS", "--fail", "--max-time", "10", url], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, (url, done.stderr)
    return done.stdout


def test_an_unsigned_kernel_is_flagged_in_the_log_status_metrics_and_page(tmp_path):
    kernel = debian_signed_kernel()
    version = kernel.name[len("vmlinuz-"):]
    unsigned = without_signature(kernel, tmp_path / "vmlinuz-unsigned").read_bytes()
    inventory = {"defaults": {"image": SIGNED_IMAGE},
                 "schools": {"class": {"image": UNSIGNED_IMAGE}},
                 "devices": [{"mac": f"52:54:00:00:01:{i:02x}", "hostname": name, "school": "class"}
                             for i, name in enumerate(AT_RISK)]
                 + [{"mac": "52:54:00:00:02:01", "hostname": "off-pc", "school": "class", "enabled": False},
                    {"mac": "52:54:00:00:02:02", "hostname": "office-pc"}]}
    config = write_config(tmp_path, inventory, http={"enabled": True})
    http = "http://" + yaml.safe_load(config.read_text())["http"]["listen"]
    build_image(tmp_path / "images" / f"{SIGNED_IMAGE}.img", kernel_version=version, kernel=kernel.read_bytes())
    build_image(tmp_path / "images" / f"{UNSIGNED_IMAGE}.img", kernel_version=version, kernel=unsigned)
    with Daemon(config) as daemon:
        daemon.wait_for("bootserverd started", timeout=10)
        warning = daemon.wait_for("NO Secure Boot signature", timeout=60)
        assert warning.endswith(
            f"image {UNSIGNED_IMAGE}: kernel {version} has NO Secure Boot signature: UEFI devices with Secure "
            f"Boot on cannot boot it; 12 devices assigned it, at risk if they boot by UEFI: "
            + ", ".join(AT_RISK[:10]) + " (+2 more)"), warning
        for name in (SIGNED_IMAGE, UNSIGNED_IMAGE):
            if not any(f"image {name} published" in line for line in daemon.lines):
                daemon.wait_for(f"image {name} published", timeout=60)

        images = {i["name"]: i for i in json.loads(get(f"{http}/status"))["images"]}
        assert images[SIGNED_IMAGE]["kernel_signed"] == {version: True}
        assert images[SIGNED_IMAGE]["secure_boot_at_risk"] is None
        assert images[UNSIGNED_IMAGE]["kernel_signed"] == {version: False}
        risk = images[UNSIGNED_IMAGE]["secure_boot_at_risk"]
        assert (risk["unsigned_kernels"], risk["devices"], risk["count"]) == ([version], AT_RISK[:10], 12)

        metrics = get(f"{http}/metrics")
        found = dict(re.findall(r'^bootserverd_image_kernel_signed\{image="([^"]+)",version="' + re.escape(version)
                                + r'"\} (\S+)$', metrics, re.M))
        assert found == {SIGNED_IMAGE: "1.0", UNSIGNED_IMAGE: "0.0"}, metrics

        page = get(f"{http}/ui/images")
        assert f"{version} (default): <b class=\"down\">NO signature</b>" in page
        assert f'<div class="banner warn unsigned" data-image="{UNSIGNED_IMAGE}">' in page
        assert f'data-image="{SIGNED_IMAGE}"' in page and page.count("banner warn unsigned") == 1
    log = "\n".join(daemon.lines)             # the lines read: to both images' publication and the warning
    assert log.count("NO Secure Boot signature") == 1 and "Traceback" not in log
