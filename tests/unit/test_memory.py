"""Large buffers are returned to the operating system when freed (glibc's mmap threshold)."""

from __future__ import annotations

import sys

import pytest

from worker.memory import return_large_buffers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_the_threshold_is_fixed_once_per_process() -> None:
    assert return_large_buffers() is True
    assert return_large_buffers() is True  # cached: mallopt is called once
    assert return_large_buffers.cache_info().misses == 1
