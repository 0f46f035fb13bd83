"""Fixtures shared by the flood and fault tests."""

import resource

import pytest


@pytest.fixture(scope="module", autouse=True)
def more_files():
    """Floods open thousands of sockets from the test process: raise its descriptor limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
