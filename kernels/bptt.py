"""Backward pass through the recurrence (full or truncated BPTT, see ``fastrnn.reference``).

The sequential part only produces ``dA[t] = d loss / d a_t`` (zero where a step is masked or beyond
the truncation); the weight gradients are then a few large matrix products over all steps at once.
"""

import numpy as np
from numba import prange

from ._jit import helper
from ._math import typed
from .rnn import chunk


@helper(parallel=True)
def recurrence_backward(dh_T, hs, W_hh_T, M, k, dA, n_threads):
    """Fill ``dA (T, B, H)`` from ``dh_T (B, H)``; ``k`` = updates to go back through (0: all)."""
    T, B, H = dA.shape
    one = typed(dA, 1.0)
    n_chunks = min(B, n_threads)
    for c in prange(n_chunks):
        b0, b1 = chunk(c, n_chunks, B)
        n = b1 - b0
        dh = dh_T[b0:b1].copy()
        dh_new = np.empty_like(dh)
        left = np.full(n, T if k == 0 else k, np.int64)
        for t in range(T - 1, -1, -1):
            da = dA[t, b0:b1]
            for i in range(n):
                b = b0 + i
                if M[t, b] and left[i] > 0:
                    for j in range(H):
                        h = hs[t + 1, b, j]
                        da[i, j] = dh[i, j] * (one - h * h)
                    left[i] -= 1
                else:
                    da[i, :] = 0
            np.dot(da, W_hh_T, dh_new)
            for i in range(n):
                b = b0 + i
                if M[t, b]:             # an update (or past the truncation: dA is 0, so dh is 0)
                    dh[i] = dh_new[i]
                # a masked step copies h, so dh passes through unchanged


@helper
def weight_grads(X, hs, dA, dW_xh, dW_hh, db_h):
    """``dW_xh = sum_t X[t].T @ dA[t]``, ``dW_hh = sum_t hs[t].T @ dA[t]``, ``db_h = sum dA``."""
    T, B, H = dA.shape
    D = X.shape[2]
    dA2 = dA.reshape((T * B, H))
    np.dot(X.reshape((T * B, D)).T, dA2, dW_xh)
    np.dot(hs[:T].reshape((T * B, H)).T, dA2, dW_hh)
    acc = np.zeros(H)                      # float64 accumulator: T * B terms
    for i in range(T * B):
        for j in range(H):
            acc[j] += dA2[i, j]
    db_h[:] = acc


@helper
def input_grads(dA, W_xh_T, dX):
    """``dX[t] = dA[t] @ W_xh.T`` for all steps in one product."""
    T, B, H = dA.shape
    np.dot(dA.reshape((T * B, H)), W_xh_T, dX.reshape((T * B, W_xh_T.shape[1])))


@helper(parallel=True)
def scatter_rows(ids, dX, dE, n_threads):
    """``dE[ids[b, t]] += dX[t, b]`` for every token. Thread ``c`` owns the rows ``v % n == c``, so no
    two threads ever add into the same row."""
    T, B, D = dX.shape
    n = n_threads
    for c in prange(n):
        for t in range(T):
            for b in range(B):
                v = ids[b, t]
                if v % n == c:
                    for d in range(D):
                        dE[v, d] += dX[t, b, d]
