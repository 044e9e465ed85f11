"""Classifier head and softmax cross-entropy (small: B x C work, serial)."""

import math

import numpy as np

from ._jit import helper


@helper
def softmax_xent(logits, y, dlogits):
    """Mean cross-entropy of ``logits (B, C)`` against ``y``; writes ``dlogits``; returns the loss
    (accumulated in float64) and the number of rows whose arg-max is the label."""
    B, C = logits.shape
    loss = 0.0
    correct = 0
    for b in range(B):
        top = logits[b, 0]
        best = 0
        for c in range(1, C):
            if logits[b, c] > top:
                top, best = logits[b, c], c
        total = 0.0
        for c in range(C):
            total += math.exp(float(logits[b, c]) - float(top))
        log_total = math.log(total)
        loss -= float(logits[b, y[b]]) - float(top) - log_total
        correct += best == y[b]
        for c in range(C):
            p = math.exp(float(logits[b, c]) - float(top) - log_total)
            dlogits[b, c] = (p - (1.0 if c == y[b] else 0.0)) / B
    return loss / B, correct


@helper
def dense(h, W, b, out):
    """``out = h @ W + b``."""
    np.dot(h, W, out)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] += b[j]


@helper
def head_backward(h_T, dlogits, W_hy_T, dW_hy, db_y, dh_T):
    """Gradients of the dense head: ``dW_hy, db_y`` and ``dh_T = dlogits @ W_hy.T``."""
    np.dot(h_T.T, dlogits, dW_hy)
    db_y[:] = 0
    for i in range(dlogits.shape[0]):
        for j in range(dlogits.shape[1]):
            db_y[j] += dlogits[i, j]
    np.dot(dlogits, W_hy_T, dh_T)
