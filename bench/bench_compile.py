"""Start-up cost in a fresh process: cold (an empty Numba cache directory) and warm (the cache a
cold start filled). Records seconds from ``import fastrnn`` to the first float32 train_step and to
all float32 kernels; the timed value is the whole subprocess, interpreter start included.

A true cold start compiles every kernel (tens of seconds), so the untimed smoke run (plain
``pytest``) runs both children on the default cache instead, which the tests have filled."""

import pytest

from fastrnn import bench


@pytest.fixture(scope="module")
def filled():
    """Cache directories filled by cold starts in this module."""
    return []


@pytest.mark.parametrize("start", ["cold", "warm"])
def test_compile(benchmark, record, tmp_path, filled, start, timed):
    if not timed:
        filled.append(None)
    elif start == "cold" or not filled:
        if start == "warm":
            bench.compile_times(tmp_path)                  # no cold start ran: fill a cache now
        filled.append(tmp_path)
    record("compile float32", start=start)
    result = benchmark.pedantic(bench.compile_times, (filled[-1],), rounds=1, iterations=1)
    benchmark.extra_info.update(result)
