"""The fused training step (forward, loss, backward, Adam) with a dense or a lazy embedding update."""

import pytest


@pytest.mark.parametrize("op", ["step", "step_lazy"])
def test_train_step(bench_op, op):
    bench_op(op)
