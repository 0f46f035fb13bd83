"""End-to-end boots. ``make test`` (CI) runs them all: the tiny image over BIOS iPXE+HTTP, BIOS
pxelinux+TFTP, UEFI iPXE and UEFI GRUB, and the real Debian image to multi-user.target.
A test marked ``slow`` would run only with BOOTSERVERD_E2E_SLOW=1 (``make e2e``) or ``-m slow``."""

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long end-to-end boot, run by `make e2e`")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("BOOTSERVERD_E2E_SLOW") == "1" or "slow" in (config.getoption("-m") or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(scope="session")
def tiny():
    from tests.e2e.build_image import tiny_image
    return tiny_image()


@pytest.fixture
def lab(tmp_path, tiny, request):
    """The boot lab serving the tiny image; ``request.param`` (indirect parametrize) is the boot section."""
    from tests.e2e.harness import BootLab
    with BootLab(tmp_path, tiny.path, tiny.name, boot=getattr(request, "param", None)) as lab:
        yield lab


@pytest.fixture
def machine_lock():
    """Holds /tmp/bootserverd-bench.lock for the test: one qemu or benchmark at a time."""
    from tests.e2e.harness import machine_lock as hold
    with hold():
        yield
