"""Real data: one training epoch of Chollet's IMDB model (2,560 reviews, maxlen 500, 10,000 words,
batch 128, float32), inference throughput, and the peak resident memory of a training process.
Also the peak memory of an epoch at scale. Skipped unless ``FASTRNN_DATA_DIR`` points at the IMDB data."""

import os

import numba
import numpy as np
import pytest
from skips import torch_param  # bench/ is on sys.path

from fastrnn import bench

pytestmark = pytest.mark.skipif(not os.environ.get("FASTRNN_DATA_DIR"),
                                reason="FASTRNN_DATA_DIR is not set")
DTYPE = "float32"


@pytest.fixture(scope="module")
def imdb(timed):
    """``(x, y), (x_test, y_test)``: 2,560 reviews each (smoke run: 32 reviews of 50 tokens)."""
    return bench.imdb_slices() if timed else bench.imdb_slices(32, maxlen=50)


def test_epoch(benchmark, record, backend, imdb):
    (x, y), _ = imdb
    warm = bench.epoch_model(backend, DTYPE)
    bench.train_epoch(backend, warm, x[:bench.EPOCH_BATCH], y[:bench.EPOCH_BATCH])  # compile/load
    record(f"epoch chollet {DTYPE} (IMDB)", bench.CHOLLET, dtype=DTYPE, reviews=len(x),
           batch_size=bench.EPOCH_BATCH)
    benchmark.pedantic(bench.train_epoch,
                       setup=lambda: ((backend, bench.epoch_model(backend, DTYPE), x, y), {}),
                       rounds=3)
    record.rates(reviews_per_s=len(x))


def test_predict(benchmark, record, backend, imdb):
    _, (x, _) = imdb
    model = bench.epoch_model(backend, DTYPE)
    bench.predict(backend, model, x[:8])                    # compile/load
    record(f"predict chollet {DTYPE} (IMDB)", bench.CHOLLET, dtype=DTYPE, reviews=len(x))
    benchmark(bench.predict, backend, model, x)
    record.rates(reviews_per_s=len(x))


@pytest.mark.parametrize("lib", ["numba", torch_param()])
def test_epoch_memory(benchmark, record, lib, imdb, tmp_path):
    """Peak RSS of a fresh process that trains one epoch (it imports only ``lib``'s stack)."""
    (x, y), _ = imdb
    data = tmp_path / "imdb.npz"
    np.savez(data, x=x, y=y)
    record(f"memory epoch chollet {DTYPE} (IMDB)", bench.CHOLLET, dtype=DTYPE, reviews=len(x))
    result = benchmark.pedantic(bench.epoch_memory, (lib, DTYPE, data, numba.get_num_threads()),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)


@pytest.mark.parametrize("n, maxlen", [(25000, 500), (10000, 2000)], ids=["25000x500", "10000x2000"])
def test_epoch_memory_at_scale(benchmark, record, n, maxlen, timed, tmp_path):
    """Peak RSS of a fresh numba process training one epoch on all 25,000 training reviews at 500
    tokens, and on 10,000 at 2,000 tokens: memory stays bounded at scale (the kernels reuse one
    scratch workspace). Smoke run: 64 reviews of 50 tokens."""
    (x, y), _ = bench.imdb_slices(n, maxlen=maxlen) if timed else bench.imdb_slices(64, maxlen=50)
    data = tmp_path / "imdb.npz"
    np.savez(data, x=x, y=y)
    record(f"memory epoch at scale {DTYPE} (IMDB)", bench.CHOLLET, dtype=DTYPE, reviews=len(x),
           maxlen=x.shape[1])
    result = benchmark.pedantic(bench.epoch_memory, ("numba", DTYPE, data, numba.get_num_threads()),
                                rounds=1, iterations=1)
    benchmark.extra_info.update(result)
