"""rnn_forward: the tanh recurrence over embedded inputs (B, T, D), returning all states."""


def test_rnn_forward(bench_op):
    bench_op("forward")
