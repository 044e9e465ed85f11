"""rnn_backward: full BPTT and BPTT truncated to the last k=4 state updates."""

import pytest


@pytest.mark.parametrize("op", ["bptt", "bptt_k4"])
def test_rnn_backward(bench_op, op):
    bench_op(op)
