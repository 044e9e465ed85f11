"""Backward pass of one batch chunk (full or truncated BPTT, as defined in ``fastrnn.reference``).

The sequential part only produces ``dA[t] = d loss / d a_t`` (zero where a step is masked or beyond
the truncation) and carries ``dh`` back through ``W_hh``; the weight and input gradients are then
single large products over all the chunk's steps, into the thread's own partial-gradient buffers.
"""

import numpy as np

from ._jit import helper
from ._math import typed


@helper
def chunk_backward(dh, hs, W_hh_T, M, k, dA):
    """Fill ``dA (T, nb, H)`` from ``dh = d loss / d h_T (nb, H)`` (overwritten); ``k`` is the
    number of state updates to go back through (0: all)."""
    T, nb, H = dA.shape
    one = typed(dA, 1.0)
    left = np.full(nb, T if k == 0 else k, np.int64)
    dh_prev = np.empty_like(dh)
    for s in range(T):
        t = T - 1 - s
        h, da, m = hs[t + 1], dA[t], M[t]          # per-step views: the inner loops vectorise
        for i in range(nb):
            if m[i] and left[i] > 0:
                for j in range(H):
                    da[i, j] = dh[i, j] * (one - h[i, j] * h[i, j])
                left[i] -= 1
            else:
                da[i, :] = 0
        np.dot(da, W_hh_T, dh_prev)
        for i in range(nb):
            if m[i]:              # an update (or past the truncation, where da and so dh_prev is 0)
                dh[i, :] = dh_prev[i]
            # a masked step copies h, so dh passes through unchanged


@helper
def chunk_recurrent_grads(hs, dA, dW_hh, db_h):
    """``dW_hh = sum_t hs[t].T @ dA[t]`` and ``db_h = sum_t dA[t]``, each one BLAS call over all
    the chunk's steps."""
    T, nb, H = dA.shape
    dA2 = dA.reshape((T * nb, H))
    np.dot(hs[:T].reshape((T * nb, H)).T, dA2, dW_hh)
    np.dot(np.ones(T * nb, dA.dtype), dA2, db_h)    # the column sums, as one BLAS call


@helper
def chunk_dense_input_grads(X, dA, W_xh_T, dW_xh, want_dx):
    """``dW_xh = sum_t X[t].T @ dA[t]``; with ``want_dx`` also ``dX[t] = dA[t] @ W_xh.T``, written
    over ``X``."""
    T, nb, H = dA.shape
    D = X.shape[2]
    dA2 = dA.reshape((T * nb, H))
    np.dot(X.reshape((T * nb, D)).T, dA2, dW_xh)
    if want_dx:
        np.dot(dA2, W_xh_T, X.reshape((T * nb, D)))
