"""Benchmark fixtures: sizes, dtypes and backends, inputs built once per module, and helpers that
warm up, time and record a benchmark. Sizes, inputs and timed callables come from ``fastrnn.bench``.

``pytest --benchmark-only`` times everything at the sizes of ``fastrnn.bench.SIZES``. Plain
``pytest`` (benchmarks disabled by the root conftest) runs each body once, untimed, as a smoke
test, at a reduced size (T <= 6, B <= 4; D, H, V as given) and on a small slice of the data.
"""

import os

import pytest
from skips import torch_param  # imports torch (if installed) first; bench/ is on sys.path

from fastrnn import bench


def pytest_report_header(config):
    """Say so when OpenBLAS is capped in this process: pytest-benchmark times in-process, while
    ``fastrnn bench`` runs its timed work in subprocesses without these variables."""
    capped = [f"{k}={os.environ[k]}" for k in bench.MACHINE_ONLY_ENV if k in os.environ]
    if capped:
        return (f"note: {', '.join(capped)} is set and caps OpenBLAS in this process (not on a "
                f"user's machine); for comparable timings run: env "
                + " ".join(f"-u {k}" for k in bench.MACHINE_ONLY_ENV) + " python -m pytest ...")
    return None


def pytest_collection_modifyitems(items):
    # timing defaults that keep `pytest --benchmark-only` within minutes; a test's own mark wins
    for item in items:
        if "benchmark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.benchmark(max_time=0.5, min_rounds=3), append=True)


@pytest.fixture(scope="session")
def timed(request):
    """True under ``--benchmark-only``/``--benchmark-enable``; False for the untimed smoke run."""
    return not request.config.getoption("benchmark_disable")


@pytest.fixture(scope="module", params=list(bench.SIZES))
def size(request):
    return request.param


@pytest.fixture(scope="module", params=bench.DTYPES)
def dtype(request):
    return request.param


@pytest.fixture(scope="module")
def batch(size, dtype, timed):
    """Inputs for this size and dtype, built once per module."""
    s = bench.SIZES[size]
    return bench.make_batch(s if timed else s._replace(T=min(s.T, 6), B=min(s.B, 4)), dtype)


@pytest.fixture(params=[torch_param(b) if b == "torch" else b for b in bench.BACKENDS])
def backend(request):
    """"numba", "numpy" or "torch" (skipped at setup, by a mark, when torch is not installed)."""
    if request.param == "torch":
        bench.import_torch()            # torch gets Numba's thread count
    return request.param


class Recorder:
    """Names a benchmark's table and fills its ``extra_info``."""

    def __init__(self, benchmark):
        self.benchmark = benchmark

    def __call__(self, group, size=None, **info):
        """Set the group; record threads, threading layer, ``size``'s T/B/D/H/V and ``info``."""
        self.benchmark.group = group
        self.benchmark.extra_info.update(bench.run_info())
        if size is not None:
            self.benchmark.extra_info.update({k: getattr(size, k) for k in "TBDHV"})
        self.benchmark.extra_info.update(info)

    def rates(self, **amounts):
        """After a timed run, record ``amount / median seconds`` under each name."""
        if self.benchmark.stats:
            median = self.benchmark.stats.stats.median
            self.benchmark.extra_info.update({k: v / median for k, v in amounts.items()})


@pytest.fixture
def record(benchmark):
    return Recorder(benchmark)


@pytest.fixture
def bench_op(benchmark, record, backend, size, dtype, batch):
    """``bench_op(op)``: time ``fastrnn.bench.make_op(op, ...)`` for this test's backend, size and
    dtype, in the table ``"<op> <size> <dtype>"``, with FLOPs and GFLOP/s (of the median)."""
    def run(op):
        fn = bench.make_op(op, backend, batch)
        fn()                            # warm-up: JIT compile / cache load, first-call allocations
        flops = bench.flops(op, batch.size)
        record(f"{op} {size} {dtype}", batch.size, dtype=dtype, flops=flops)
        benchmark(fn)
        if flops:
            record.rates(gflops=flops / 1e9)
    return run
