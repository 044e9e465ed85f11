"""adam_update: dense over the whole flat buffer, and lazy (the embedding rows of one batch with
``rows``, plus the dense tail). Torch: fused Adam; SparseAdam on a coalesced sparse gradient."""

import pytest


@pytest.mark.parametrize("op", ["adam", "adam_lazy"])
def test_adam_update(bench_op, op):
    bench_op(op)
