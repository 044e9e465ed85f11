"""Classifier head and softmax cross-entropy for the rows of one chunk (B x C work, serial)."""

import math

import numpy as np

from ._blas import matmul
from ._jit import helper


@helper
def softmax_xent(logits, y, B, dlogits):
    """Cross-entropy of the rows ``logits (nb, C)`` against ``y``, for a batch mean over ``B`` rows.

    Writes ``dlogits = d mean_loss / d logits``; returns the sum of the rows' losses (float64) and
    how many rows have their arg-max at the label.
    """
    nb, C = logits.shape
    loss = 0.0
    correct = 0
    for i in range(nb):
        top = float(logits[i, 0])
        best = 0
        for c in range(1, C):
            if logits[i, c] > top:
                top, best = float(logits[i, c]), c
        total = 0.0
        for c in range(C):
            total += math.exp(float(logits[i, c]) - top)
        log_total = math.log(total)
        loss -= float(logits[i, y[i]]) - top - log_total
        correct += best == y[i]
        for c in range(C):
            p = math.exp(float(logits[i, c]) - top - log_total)
            dlogits[i, c] = (p - (1.0 if c == y[i] else 0.0)) / B
    return loss, correct


@helper
def head_forward(h, W, b, out):
    """``out = h @ W + b``."""
    matmul(h, W, out, 0.0)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += b[j]


@helper
def head_backward(h_T, dlogits, W_hy, dW_hy, db_y, dh_T):
    """Gradients of the dense head: ``dW_hy, db_y`` and ``dh_T = dlogits @ W_hy.T``."""
    matmul(h_T.T, dlogits, dW_hy, 0.0)
    db_y[:] = 0
    for i in range(dlogits.shape[0]):
        db_y += dlogits[i]
    matmul(dlogits, W_hy.T, dh_T, 0.0)
